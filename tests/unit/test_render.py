from dlbox.build import bases
from dlbox.spec import presets
from dlbox.build import render
from dlbox.spec import model as spec
from dlbox.build.lock import BaseInfo, Lock, OsPackage, OsSet, PythonPackage, PythonSet

TF = spec.parse(presets.text("tensorflow-2.9"))


def steps(dockerfile: str) -> list[str]:
    """Instruction keywords with a hint of what they do, comments dropped."""
    return [line.split()[0] for line in dockerfile.splitlines() if line and not line.startswith((" ", "#"))]


def test_render_is_a_pure_function_of_the_spec():
    first = render.render(TF, "base:1")
    second = render.render(spec.parse(presets.text("tensorflow-2.9")), "base:1")
    assert first == second


def test_layers_are_ordered_for_the_cache():
    text = render.render(TF, bases.ref(TF.base)).dockerfile
    order = [text.index(marker) for marker in (
        "FROM dlbox-base/debian-bullseye:", "apt-get install", "COPY dlbox/requirements.txt",
        "pip install --report", "sshd_config", "USER dl", "LABEL ")]
    assert order == sorted(order)
    assert steps(text)[-1] == "LABEL"


def test_user_code_comes_after_dependencies():
    with_code = spec.parse(presets.text("tensorflow-2.9") + "code:\n  src: src\n")
    text = render.render(with_code, "b:1").dockerfile
    assert text.index("pip install --report") < text.index("COPY --chown=1000:1000 code/ /opt/code/") < text.index("LABEL")


def test_requirements_file_holds_the_spec_pins():
    plan = render.render(TF, "b:1")
    assert plan.files["dlbox/requirements.txt"].decode().splitlines() == TF.pip


def test_ca_bundle_is_copied_by_path_never_by_content():
    plan = render.render(TF, "b:1", ca_bundle=True)
    assert "COPY dlbox/ca-bundle.crt /etc/dlbox/ca-bundle.crt" in plan.dockerfile
    assert plan.files["dlbox/ca-bundle.crt"] == b""
    without = render.render(TF, "b:1", ca_bundle=False)
    assert "ca-bundle" not in without.dockerfile and "dlbox/ca-bundle.crt" not in without.files


def test_ssh_is_hardened_and_host_keys_are_not_baked():
    plan = render.render(TF, "b:1")
    config = plan.files["dlbox/sshd_config"].decode()
    for line in ("PermitRootLogin no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "AllowUsers dl"):
        assert line in config.splitlines()
    assert "rm -f /etc/ssh/ssh_host_*_key*" in plan.dockerfile
    assert "openssh-server" in plan.dockerfile


def test_labels_name_the_spec():
    labels = render.image_labels(TF)
    assert labels["dlbox.spec-hash"] == TF.environment_hash()
    assert labels["dlbox.managed"] == "true" and labels["dlbox.services"] == "jupyter,ssh"


def test_gpu_variant_installs_python_and_exposes_devices():
    gpu = spec.parse(presets.text("tensorflow-2.9-gpu"))
    text = render.render(gpu, bases.ref(gpu.base)).dockerfile
    assert text.startswith("# Generated") and "FROM nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04" in text
    assert "python3-venv" in text and "NVIDIA_VISIBLE_DEVICES=all" in text
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text


def test_building_from_a_lock_pins_versions_and_hashes():
    lock = Lock(
        name="tensorflow-2.9", spec_hash=TF.environment_hash(), base=BaseInfo(ref="b:1", rootfs_sha256="0" * 64),
        python=PythonSet(version="3.9.2", packages=[
            PythonPackage(name="numpy", version="1.23.5", hashes=["sha256:" + "a" * 64]),
            PythonPackage(name="pip", version="24.3.1"),  # the venv's own: not re-installed
        ]),
        os=OsSet(packages=[OsPackage(name="git", version="1:2.30.2-1"), OsPackage(name="bash", version="5.1")]),
    )
    plan = render.render(TF, "b:1", lock=lock)
    assert plan.files["dlbox/requirements.txt"].decode() == f"numpy==1.23.5 --hash=sha256:{'a' * 64}\n"
    assert "pip install --no-deps --require-hashes --report" in plan.dockerfile
    assert "git=1:2.30.2-1 curl openssh-server" in plan.dockerfile


def test_base_ref_is_named_by_its_inputs():
    a = spec.parse("name: a\nbase:\n  debian: bullseye\n")
    b = spec.parse("name: b\nbase:\n  debian: bullseye\n  mirror: http://mirror.example/debian\n")
    assert bases.ref(a.base) == bases.ref(a.base)
    assert bases.ref(a.base) != bases.ref(b.base)
    assert bases.ref(a.base).startswith("dlbox-base/debian-bullseye:")


def test_constraints_apply_when_resolving_not_when_locked():
    plan = render.render(TF, "b:1")
    assert "-c /opt/dlbox/constraints.txt" in plan.dockerfile
    assert "tensorflow-estimator==2.9.0" in plan.files["dlbox/constraints.txt"].decode().splitlines()
    lock = Lock(name="t", spec_hash="s", base=BaseInfo(ref="b:1"), python=PythonSet(version="3.9.2", packages=[]),
                os=OsSet(packages=[]))
    locked = render.render(TF, "b:1", lock=lock)
    assert "constraints" not in locked.dockerfile and "dlbox/constraints.txt" not in locked.files
