import pytest

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
    assert spec.parse_size("8g") == 8 * 1024**3
    assert spec.parse_size("512m") == 512 * 1024**2
    assert spec.parse_size(1024) == 1024
    assert spec.format_size(8 * 1024**3) == "8g"
    with pytest.raises(ValueError):
        spec.parse_size("0")


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
