"""nbgrader settings every account on the class hub shares (students and instructors).

The hub puts this folder on JUPYTER_CONFIG_PATH of every server it starts (jupyterhub_config.py),
so nbgrader's lab extensions and the commands typed in a hub terminal read it.
"""
import os

from nbgrader.auth import JupyterHubAuthPlugin

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = os.environ.get("TLKIT_COURSE", "tlkit")
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
# Fetched lessons land in ~/<course>/<lesson>/, so a second course on the hub never collides.
c.Exchange.path_includes_course = True
# Course membership comes from the hub's groups (nbgrader-<course>, formgrade-<course>): fetch,
# submit and the Assignments tab refuse anyone who is in neither.
c.Authenticator.plugin_class = JupyterHubAuthPlugin
