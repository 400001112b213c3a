import tarfile

from dlbox.build import context
from dlbox.build import render
from dlbox.spec import model as spec

SPEC = spec.parse("name: demo\nbase:\n  debian: bullseye\npip: [six==1.16.0]\ncode:\n  src: .\n")


def names(buf) -> list[str]:
    with tarfile.open(fileobj=buf) as tar:
        return tar.getnames()


def test_context_is_byte_for_byte_deterministic(tmp_path):
    (tmp_path / "b.py").write_text("b")
    (tmp_path / "a.py").write_text("a")
    plan = render.render(SPEC, "b:1")
    first = context.make(plan, ca_bundle=b"CA", code_dir=tmp_path).getvalue()
    (tmp_path / "a.py").touch()  # a new mtime must not change the context
    second = context.make(plan, ca_bundle=b"CA", code_dir=tmp_path).getvalue()
    assert first == second


def test_context_skips_vcs_caches_and_ignored(tmp_path):
    for rel in ("keep.py", ".git/config", "__pycache__/x.pyc", "data/big.bin", "pkg/mod.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".dlboxignore").write_text("# comment\ndata/\n")
    got = names(context.make(render.render(SPEC, "b:1"), code_dir=tmp_path))
    assert "code/keep.py" in got and "code/pkg/mod.py" in got
    assert not any(n.startswith(("code/.git", "code/__pycache__", "code/data")) for n in got)


def test_ca_bundle_content_goes_only_into_its_file():
    buf = context.make(render.render(SPEC, "b:1", ca_bundle=True), ca_bundle=b"SECRET-CA")
    with tarfile.open(fileobj=buf) as tar:
        assert tar.extractfile("dlbox/ca-bundle.crt").read() == b"SECRET-CA"
        assert b"SECRET-CA" not in tar.extractfile("Dockerfile").read()
