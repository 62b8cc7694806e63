"""JupyterHub configuration for a tlkit class: one hub, one course, nbgrader's course groups.

Who is who comes from the roster (``roster.txt`` beside this file, or ``$TLKIT_ROSTER``):
one line per person, ``instructor <username>`` or ``student <username>``. The usernames are
local Linux accounts (PAM login); each person's server runs as their own account, so the
nbgrader exchange's file permissions keep one student's work from another.

    sudo /path/to/.venv/bin/jupyterhub -f /path/to/classroom/jupyterhub_config.py

Environment (all optional): ``TLKIT_COURSE`` (course id, default ``tlkit``), ``TLKIT_ROSTER``,
``NBGRADER_EXCHANGE`` (default ``/srv/nbgrader/exchange``), ``TLKIT_HUB_STATE`` (database and
cookie secret, default ``/srv/jupyterhub``). See README.md here and course/INSTRUCTORS.md.
"""
import os
import sys

from tornado import web

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

HERE = os.path.dirname(os.path.abspath(__file__))
COURSE = os.environ.get("TLKIT_COURSE", "tlkit")
ROSTER = os.environ.get("TLKIT_ROSTER", os.path.join(HERE, "roster.txt"))
EXCHANGE = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
STATE = os.environ.get("TLKIT_HUB_STATE", "/srv/jupyterhub")
INSTRUCTORS_GROUP = f"formgrade-{COURSE}"  # nbgrader's names: formgrade-<course> for graders,
STUDENTS_GROUP = f"nbgrader-{COURSE}"      # nbgrader-<course> for students


def read_roster(path: str) -> dict[str, list[str]]:
    """``{"instructor": [...], "student": [...]}`` from a roster file (``role username`` per line)."""
    if not os.path.isfile(path):
        raise SystemExit(f"tlkit classroom: no roster at {path}. Copy {os.path.join(HERE, 'roster.example.txt')} "
                         "to roster.txt beside jupyterhub_config.py (or set TLKIT_ROSTER) and list your "
                         "instructors and students, one 'instructor NAME' or 'student NAME' per line.")
    people: dict[str, list[str]] = {"instructor": [], "student": []}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 2 or words[0] not in people:
                raise SystemExit(f"tlkit classroom: {path}, line {number}: expected 'instructor NAME' or "
                                 f"'student NAME', got {line.strip()!r}.")
            people[words[0]].append(words[1])
    return people


ROLES = read_roster(ROSTER)

# Login: local accounts through PAM. Only the people on the roster may log in; people added to a
# course group later through the hub's API (e.g. by `nbgrader db student add`) are allowed too.
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = set(ROLES["instructor"] + ROLES["student"])
c.Authenticator.allow_existing_users = True
c.Authenticator.admin_users = set()  # instructors are not hub admins (they get the scoped role below); add
#                                      the account of whoever runs the hub to use its admin page

c.JupyterHub.load_groups = {
    INSTRUCTORS_GROUP: {"users": ROLES["instructor"]},
    STUDENTS_GROUP: {"users": ROLES["student"]},
}

# What nbgrader needs from the hub. JupyterHubAuthPlugin asks the hub for the user's groups (every
# exchange command checks them); instructors also add students to the course group (nbgrader db
# student add, autograde) and the course list looks for formgrader services.
c.JupyterHub.load_roles = [
    {
        "name": f"{COURSE}-instructor",
        "description": f"Manage the students of {COURSE}",
        "scopes": [f"list:groups!group={STUDENTS_GROUP}", f"read:groups!group={STUDENTS_GROUP}",
                   f"groups!group={STUDENTS_GROUP}", "list:services", "read:services"],
        "groups": [INSTRUCTORS_GROUP],
    },
]
# The token each server gets ($JUPYTERHUB_API_TOKEN) holds the subset of these that its user has.
c.Spawner.server_token_scopes = [
    "users:activity!user", "access:servers!server", "read:users:name!user", "read:users:groups!user",
    f"list:groups!group={STUDENTS_GROUP}", f"read:groups!group={STUDENTS_GROUP}",
    f"groups!group={STUDENTS_GROUP}", "list:services", "read:services",
]

# Servers: JupyterLab as the user's own account, from the same environment as the hub.
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [os.path.join(sys.prefix, "bin", "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.environment = {
    "PATH": os.path.join(sys.prefix, "bin") + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
    "NBGRADER_EXCHANGE": EXCHANGE,
    "TLKIT_COURSE": COURSE,
}


def role_of(groups) -> str:
    """``"instructor"`` or ``"student"`` from a user's hub group names."""
    if INSTRUCTORS_GROUP in groups:
        return "instructor"
    if STUDENTS_GROUP in groups:
        return "student"
    raise web.HTTPError(403, f"{COURSE}: you are not on the course roster (hub groups {INSTRUCTORS_GROUP} "
                             f"or {STUDENTS_GROUP}); ask your instructor to add you.")


def choose_tools(spawner) -> None:
    """Give each server the nbgrader tools of its user's role (see jupyter/<role>/ here)."""
    role = role_of({group.name for group in spawner.user.groups})
    spawner.environment["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        [os.path.join(HERE, "jupyter", role), os.path.join(HERE, "jupyter", "common")])


c.Spawner.pre_spawn_hook = choose_tools

# State: the hub's database and cookie secret outside the checkout.
c.JupyterHub.db_url = f"sqlite:///{os.path.join(STATE, 'jupyterhub.sqlite')}"
c.JupyterHub.cookie_secret_file = os.path.join(STATE, "jupyterhub_cookie_secret")
c.JupyterHub.bind_url = os.environ.get("TLKIT_HUB_URL", "http://:8000")
