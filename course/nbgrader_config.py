"""nbgrader configuration for the tlkit course (see INSTRUCTORS.md).

Run nbgrader's commands from this folder (``cd course``); they find this file here.
Layout (nbgrader's standard one, relative to this folder):

    source/<lesson>/<lesson>.ipynb        the lessons, with solutions (in git)
    release/<lesson>/<lesson>.ipynb       student versions   (nbgrader generate_assignment)
    submitted/<student>/<lesson>/         collected work     (nbgrader collect, or copied in)
    autograded/, feedback/, gradebook.db  grading results    (nbgrader autograde, generate_feedback)

Everything but source/ is generated and ignored by git.
"""
import os

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "tlkit"
# The course root is this file's folder, wherever nbgrader is started from.
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = f"sqlite:///{os.path.join(c.CourseDirectory.root, 'gradebook.db')}"

# Lessons train small models on the CPU: a cell may take minutes there (nbgrader's default is 30 s).
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True
# Keep the autograded copy readable: at most this many output lines per cell.
c.LimitOutput.max_lines = 200

# What replaces a solution region in the student version. The checks in tlkit.grading fail
# on this stub with "not written yet", so a blank answer never earns points.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Students and assignments are added to the gradebook when their work is first seen.
c.GenerateAssignment.create_assignment = True
c.Autograde.create_student = True

# Release and collect through nbgrader's exchange folder: /srv/nbgrader/exchange by default (what
# JupyterHub set-ups use); set NBGRADER_EXCHANGE to use another shared folder.
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
