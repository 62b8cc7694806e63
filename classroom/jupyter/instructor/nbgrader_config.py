"""nbgrader settings for instructors on the class hub: where the course folder is.

The course folder is ~/course (a copy of the repository's course/ folder), or $TLKIT_COURSE_ROOT.
Its own nbgrader_config.py (timeouts, stubs, folders) is loaded here too, so the Formgrader
panel grades exactly as `nbgrader ...` typed inside that folder does.
"""
import os

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

root = os.environ.get("TLKIT_COURSE_ROOT") or os.path.join(os.path.expanduser("~"), "course")
if os.path.isfile(os.path.join(root, "nbgrader_config.py")):
    load_subconfig(os.path.join(root, "nbgrader_config.py"))  # noqa: F821 (traitlets provides it)
c.CourseDirectory.root = root
