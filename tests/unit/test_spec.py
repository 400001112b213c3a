import pytest

from dlbox import sizes
from dlbox.spec import presets
from dlbox.spec import model as spec
from dlbox.errors import UsageError

MINIMAL = "name: demo\nbase:\n  debian: bullseye\n"


def error_of(text: str) -> str:
    with pytest.raises(UsageError) as caught:
        spec.parse(text, source="dlbox.yaml")
    assert caught.value.exit_code == 2
    return caught.value.message


def test_minimal_spec_gets_the_suite_python():
    parsed = spec.parse(MINIMAL)
    assert parsed.python == "3.9"
    assert parsed.user.name == "dl" and parsed.services == []


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_validates(name):
    parsed = spec.parse(presets.text(name))
    assert parsed.name == name
    assert all("==" in req for req in parsed.pip), "presets carry exact pins"


def test_tensorflow_preset_pins_what_tf_29_needs():
    pins = dict(req.split("==") for req in spec.parse(presets.text("tensorflow-2.9")).pip)
    assert pins["tensorflow-cpu"] == "2.9.3"
    assert pins["numpy"].startswith("1.23.")  # NumPy 2 breaks TF 2.9
    assert tuple(int(x) for x in pins["protobuf"].split(".")[:2]) < (3, 20)
    assert int(pins["notebook"].split(".")[0]) < 7


def test_gpu_preset_is_a_cuda_image_with_gpu_defaults():
    parsed = spec.parse(presets.text("tensorflow-2.9-gpu"))
    assert parsed.gpu.cuda == "11.2" and "cuda" in parsed.base.image
    assert parsed.workspace.resources.gpus == "all"


def test_misspelt_key_names_key_place_line_and_allowed():
    message = error_of(MINIMAL + "pip:\n  - six\nworkspace:\n  resources:\n    memroy: 8g\n")
    assert message.startswith("dlbox.yaml:8: workspace.resources.memroy: unknown key")
    assert "memory" in message and "cpus" in message


def test_unknown_top_level_key():
    assert error_of(MINIMAL + "pip_packages: [six]\n").startswith("dlbox.yaml:4: pip_packages: unknown key")


def test_missing_name():
    assert error_of("base:\n  debian: bullseye\n") == "dlbox.yaml:1: name: required key is missing"


@pytest.mark.parametrize("text, expected", [
    ("name: d\nbase:\n  debian: jessie\n", "base.debian: unknown suite 'jessie'"),
    ("name: d\nbase:\n  debian: bullseye\n  image: x\n", "base: set exactly one of"),
    ("name: d\nbase:\n  debian: bullseye\npython: '3.8'\n", "dlbox.yaml:4: python: bullseye ships Python 3.9"),
    ("name: d\nbase:\n  image: ubuntu:22.04\n", "python: required with an 'image' base"),
    ("name: d\nbase:\n  debian: bullseye\ngpu:\n  cuda: '11.2'\n", "gpu: needs an 'image' base"),
    ("name: d\nbase:\n  debian: bullseye\nservices: [jupyter]\n", "services: 'jupyter' needs a Jupyter server"),
    ("name: d\nbase:\n  debian: bullseye\nservices: [vnc]\n", "services[0]: must be 'jupyter' or 'ssh'"),
    ("name: Bad Name\nbase:\n  debian: bullseye\n", "dlbox.yaml:1: name: use lowercase"),
    ("name: d\nbase:\n  debian: bullseye\nworkspace:\n  resources:\n    memory: lots\n", "dlbox.yaml:6: workspace.resources.memory: 'lots' is not a size"),
    ("name: d\nbase:\n  debian: bullseye\nworkspace:\n  resources:\n    gpus: some\n", "gpus"),
    ("name: d\nbase:\n  debian: bullseye\npip:\n  - '--index-url=x'\n", "pip"),
    ("name: d\nbase: [debian]\n", "dlbox.yaml:2: base:"),
    ("- a list\n", "a spec is a mapping"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_specs_get_one_clear_line(text, expected):
    message = error_of(text)
    assert expected in message
    assert "\n" not in message


def test_sizes():
    assert sizes.parse_size("8g") == 8 * 1024**3
    assert sizes.parse_size("512m") == 512 * 1024**2
    assert sizes.parse_size(1024) == 1024
    assert sizes.format_size(8 * 1024**3) == "8g"
    with pytest.raises(ValueError):
        sizes.parse_size("0")


def test_environment_hash_ignores_workspace_defaults_but_not_packages():
    plain = spec.parse(MINIMAL)
    with_defaults = spec.parse(MINIMAL + "workspace:\n  resources:\n    memory: 2g\n")
    with_pkg = spec.parse(MINIMAL + "pip: [six==1.16.0]\n")
    assert plain.environment_hash() == with_defaults.environment_hash()
    assert plain.environment_hash() != with_pkg.environment_hash()


def test_load_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        spec.load(tmp_path / "dlbox.yaml")


def test_to_yaml_round_trips():
    parsed = spec.parse(presets.text("tensorflow-2.9"))
    assert spec.parse(spec.to_yaml(parsed)) == parsed


# --- every mistake at once -------------------------------------------------------------------------


def test_three_mistakes_are_all_reported_with_their_lines():
    text = ("name: Bad Name\n"          # 1
            "base:\n"                   # 2
            "  debian: bullseye\n"      # 3
            "pip_packages: [six]\n"     # 4
            "workspace:\n"              # 5
            "  resources:\n"            # 6
            "    memory: lots\n")       # 7
    lines = error_of(text).split("\n")
    assert lines[0] == "dlbox.yaml: 3 errors"
    assert lines[1].startswith("dlbox.yaml:1: name: use lowercase")
    assert lines[2].startswith("dlbox.yaml:4: pip_packages: unknown key")
    assert lines[3].startswith("dlbox.yaml:7: workspace.resources.memory: 'lots' is not a size")
    assert len(lines) == 4
    assert "http" not in error_of(text) and "Traceback" not in error_of(text)  # no pydantic links


def test_a_misspelt_required_key_is_named_next_to_the_missing_one():
    lines = error_of("name: demo\nbsae:\n  debian: bullseye\n").split("\n")
    assert lines == [
        "dlbox.yaml: 2 errors",
        "dlbox.yaml:1: base: required key is missing",
        "dlbox.yaml:2: bsae: unknown key; did you mean `base`? allowed here: name, base, python, apt, pip, "
        "constraints, services, user, gpu, env, code, workspace, job, pipeline",
    ]


@pytest.mark.parametrize("text, line, place, near", [
    (MINIMAL + "workspace:\n  resources:\n    memroy: 8g\n", 6, "workspace.resources.memroy", "memory"),
    (MINIMAL + "workspace:\n  mouts: [data:/data]\n", 5, "workspace.mouts", "mounts"),
    (MINIMAL + "code:\n  src: .\n  dset: /opt/code\n", 6, "code.dset", "dest"),
    ("name: demo\nbase:\n  debain: bullseye\n", 3, "base.debain", "debian"),
])
def test_a_nested_unknown_key_gets_its_place_and_the_nearest_key(text, line, place, near):
    message = error_of(text)
    assert message.startswith(f"dlbox.yaml:{line}: {place}: unknown key; did you mean `{near}`? allowed here:")


def test_no_suggestion_when_nothing_is_close():
    message = error_of(MINIMAL + "zzzz: 1\n")
    assert message.startswith("dlbox.yaml:4: zzzz: unknown key; allowed here:")
    assert "did you mean" not in message


def test_a_union_value_gets_one_line_for_the_member_it_matched():
    # gpus takes 'all', a count or a list of IDs: a bad list item is reported, not "should be a string"
    message = error_of(MINIMAL + "workspace:\n  resources:\n    gpus: [GPU-1, 'a b']\n")
    assert message == "dlbox.yaml:6: workspace.resources.gpus[1]: 'a b' is not a GPU ID"
    assert error_of(MINIMAL + "job:\n  resources:\n    gpus: {a: 1}\n").count("\n") == 0
