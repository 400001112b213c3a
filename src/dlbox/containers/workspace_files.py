"""The files that run a workspace's services, put into its container before it starts.

Pure text. Everything runs as the workspace user: sshd on 2222 (a non-root sshd can only
log in its own user, so root logins are impossible by construction), Jupyter on 8888 with a
token read from a file (never from the environment or the command line, which `docker
inspect` and `ps` show).

The root filesystem is read-only (CIS 5.13). These files live in a volume of the container's own
at DIR (root's, so the user cannot change them; the archive API writes only into volumes there),
not at /etc/dlbox, where the image keeps its CA bundle. The user's HOME is a volume of its own:
`pip install` goes there (PIP_PREFIX), and sitecustomize.py puts it on sys.path after the venv.
"""

from __future__ import annotations

JUPYTER_PORT = 8888
SSH_PORT = 2222
DIR = "/etc/dlbox-ws"
TOKEN_FILE = f"{DIR}/jupyter_token"
PID_DIR = "/tmp/dlbox"
PYTHON_DIR = f"{DIR}/python"  # on PYTHONPATH: only sitecustomize.py

# The venv turns the user site off (and is read-only now), so the user's installs are added here,
# after the venv's own packages: an image package is never shadowed by a user's copy.
SITECUSTOMIZE = """\
# written by dlbox: packages the user installed into their HOME (PIP_PREFIX=$PYTHONUSERBASE)
import site
site.addsitedir(site.getusersitepackages())
"""


def state_env(home: str, image_env: dict[str, str]) -> dict[str, str]:
    """The environment that sends the user's own state to HOME, given the image's environment."""
    local = f"{home}/.local"
    path = image_env.get("PATH") or "/usr/local/bin:/usr/bin:/bin"
    python_path = ":".join(filter(None, [PYTHON_DIR, image_env.get("PYTHONPATH")]))
    return {"HOME": home, "PYTHONUSERBASE": local, "PIP_PREFIX": local, "PYTHONPATH": python_path,
            "PATH": f"{path}:{local}/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

START = f"""\
#!/bin/bash
# dlbox workspace entrypoint: start the services, restart Jupyter when it exits (token rotation).
set -u
mkdir -p {PID_DIR}
cd /workspace 2>/dev/null || cd "$HOME"
if [ -f {DIR}/ssh/sshd_config ]; then
  /usr/sbin/sshd -D -e -f {DIR}/ssh/sshd_config &
fi
if [ -f {DIR}/jupyter_config.py ]; then
  (
    while true; do
      jupyter server --config={DIR}/jupyter_config.py &
      echo $! > {PID_DIR}/jupyter.pid
      wait $!
      sleep 0.5
    done
  ) &
fi
trap 'kill -TERM 0; exit 143' TERM INT  # not 0: after a dockerd restart the restart policy brings it back
sleep infinity &  # the workspace lives until stopped, with or without services
wait
"""

# The workspace's healthcheck (CIS 5.27): each service it runs accepts connections; with neither,
# the entrypoint answers (the container lives only as long as it does, so that is what is left).
HEALTH = f"""\
#!/bin/bash
# dlbox workspace healthcheck, run by the engine as the workspace user
if [ -f {DIR}/jupyter_config.py ]; then
  (exec 3<>/dev/tcp/127.0.0.1/{JUPYTER_PORT}) 2>/dev/null || {{ echo "jupyter does not answer on {JUPYTER_PORT}"; exit 1; }}
fi
# sshd: listening, read from the kernel's table (a probe connection would log a line every time)
if [ -f {DIR}/ssh/sshd_config ]; then
  grep -qE ':{SSH_PORT:04X} [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null \
    || {{ echo "sshd does not listen on {SSH_PORT}"; exit 1; }}
fi
exit 0
"""
HEALTHCHECK = {"test": ["CMD", "/bin/bash", f"{DIR}/health.sh"], "interval": 15 * 10**9, "timeout": 5 * 10**9,
               "retries": 3, "start_period": 120 * 10**9}
# A dockerd that restarts without live-restore stops every container (start.sh then exits 143); a
# workspace that ended so, or was killed or crashed, comes back, at most 5 times (CIS 5.15).
# `dlbox stop` first sets NO_RESTART, so a stopped workspace stays stopped; `start` sets RESTART again.
RESTART = {"Name": "on-failure", "MaximumRetryCount": 5}
NO_RESTART = {"Name": "no", "MaximumRetryCount": 0}

JUPYTER_CONFIG = f"""\
# written by dlbox
c = get_config()  # noqa: F821
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = {JUPYTER_PORT}
c.ServerApp.port_retries = 0
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/workspace"
import importlib.util  # open on a notebook page where the image has one, not the bare server's
if importlib.util.find_spec("jupyterlab"):
    c.ServerApp.default_url = "/lab"
elif importlib.util.find_spec("notebook"):
    c.ServerApp.default_url = "/tree"
c.ServerApp.allow_remote_access = True
with open("{TOKEN_FILE}") as handle:
    c.IdentityProvider.token = handle.read().strip()
"""

# Key-only logins for one user; root never. Shared by the image's own sshd config (render.py).
SSHD_HARDENING = """\
PermitRootLogin no
PasswordAuthentication no
PermitEmptyPasswords no
KbdInteractiveAuthentication no
ChallengeResponseAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
AllowUsers {user}
X11Forwarding no
PrintMotd no
"""

SSHD_CONFIG = f"""\
# written by dlbox: key-only logins for {{user}}, run by {{user}} itself
Port {SSH_PORT}
HostKey {DIR}/ssh/ssh_host_ed25519_key
PidFile {PID_DIR}/sshd.pid
AuthorizedKeysFile {DIR}/ssh/authorized_keys
{SSHD_HARDENING}UsePAM no
StrictModes yes
AllowTcpForwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def sshd_config(user: str, env: dict[str, str]) -> str:
    """The sshd config, with the image's environment (PATH to the venv, CA settings) for SSH sessions."""
    text = SSHD_CONFIG.format(user=user)
    settable = {k: v for k, v in sorted(env.items()) if '"' not in v and k not in ("HOME", "HOSTNAME")}
    if settable:
        text += "SetEnv " + " ".join(f'{k}="{v}"' for k, v in settable.items()) + "\n"
    return text


def files(*, user: str, uid: int, token: str | None, host_key: bytes | None,
          authorized_keys: str | None, env: dict[str, str] | None = None) -> list[tuple[str, bytes, int, int]]:
    """(path, content, mode, owner uid) for each file the container needs."""
    out = [(f"{DIR}/start.sh", START.encode(), 0o755, 0), (f"{DIR}/health.sh", HEALTH.encode(), 0o755, 0),
           (f"{PYTHON_DIR}/sitecustomize.py", SITECUSTOMIZE.encode(), 0o644, 0)]
    if token is not None:
        out += [(f"{DIR}/jupyter_config.py", JUPYTER_CONFIG.encode(), 0o644, 0),
                (TOKEN_FILE, token.encode(), 0o400, uid)]
    if host_key is not None:
        out += [(f"{DIR}/ssh/sshd_config", sshd_config(user, env or {}).encode(), 0o644, 0),
                (f"{DIR}/ssh/ssh_host_ed25519_key", host_key, 0o600, uid),
                (f"{DIR}/ssh/authorized_keys", (authorized_keys or "").encode(), 0o644, 0)]
    return out
