"""The model registry without an engine: references, numbering, aliases and their history,
content hashing, and registration (the signature helper faked at the engine's edge)."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbox.errors import DlboxError, NotFound, UsageError
from dlbox.jobs import runner as jobs
from dlbox.models import files, refs, registry, signature
from dlbox.store.db import Job, Store

SIG = {"tags": ["serve"], "signatures": {
    "serving_default": {"method_name": "tensorflow/serving/predict",
                        "inputs": {"x": {"name": "serving_default_x:0", "dtype": "DT_FLOAT", "shape": [-1, 3]}},
                        "outputs": {"y": {"name": "StatefulPartitionedCall:0", "dtype": "DT_FLOAT",
                                          "shape": [-1, 1]}}},
    "__saved_model_init_op": {"method_name": "", "inputs": {}, "outputs": {}}}}


# --- references ---------------------------------------------------------------------------------


def test_references_parse():
    assert refs.resolve("digits") == refs.Ref("digits")
    assert refs.resolve("digits:3") == refs.Ref("digits", version=3)
    assert refs.resolve("digits@champion") == refs.Ref("digits", alias="champion")
    assert refs.resolve("ann/digits@prod-1") == refs.Ref("digits", alias="prod-1", owner="ann")


@pytest.mark.parametrize("bad", ["", "Digits", "digits:", "digits:0", "digits:03", "digits:x", "digits@",
                                 "digits@3x", "digits:1@a", "d:1:2", "a/b/c", "/digits", "dig its", "d\n",
                                 "x" * 65, "digits:99999999999", "digits@Champion"])
def test_bad_references_are_one_line_usage_errors(bad):
    with pytest.raises(UsageError) as caught:
        refs.resolve(bad)
    assert "\n" not in caught.value.message and caught.value.exit_code == 2


names = st.from_regex(refs.NAME, fullmatch=True)
aliases = st.from_regex(refs.ALIAS, fullmatch=True)
owners = st.none() | st.from_regex(refs.OWNER, fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(name=names, owner=owners, pick=st.one_of(st.none(), st.integers(1, refs.MAX_VERSION), aliases))
def test_every_reference_reads_back_as_itself(name, owner, pick):
    ref = refs.Ref(name, version=pick if isinstance(pick, int) else None,
                   alias=pick if isinstance(pick, str) else None, owner=owner)
    assert refs.resolve(str(ref)) == ref


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_is_a_usage_error(text):
    try:
        ref = refs.resolve(text)
    except UsageError as exc:
        assert "\n" not in exc.message
    else:
        assert str(ref) == text


# --- content hashing ----------------------------------------------------------------------------


def tree(root, content=b"weights", extra=None):
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"pb")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(content)
    for name, data in (extra or {}).items():
        (root / name).write_bytes(data)
    return root


def frozen_hash(src, dest):
    files.copy_tree(src, dest, what="model")
    files.freeze(dest)
    return files.tree_hash(dest)


def test_the_hash_covers_paths_modes_and_contents(tmp_path):
    a = frozen_hash(tree(tmp_path / "a"), tmp_path / "ka")
    assert a == frozen_hash(tree(tmp_path / "b"), tmp_path / "kb")  # same files, same hash
    assert a.files == 2 and a.bytes == len(b"pb") + len(b"weights")
    assert a != frozen_hash(tree(tmp_path / "c", b"other"), tmp_path / "kc")
    renamed = tree(tmp_path / "d")
    os.rename(renamed / "saved_model.pb", renamed / "saved_model2.pb")
    assert a.files_hash != frozen_hash(renamed, tmp_path / "kd").files_hash
    execable = tree(tmp_path / "e")
    (execable / "saved_model.pb").chmod(0o755)
    assert a.files_hash != frozen_hash(execable, tmp_path / "ke").files_hash


def test_kept_files_are_read_only(tmp_path):
    frozen_hash(tree(tmp_path / "a"), tmp_path / "k")
    for path in [tmp_path / "k", tmp_path / "k" / "variables", tmp_path / "k" / "saved_model.pb"]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0
    if os.geteuid() == 0:
        assert (tmp_path / "k" / "saved_model.pb").stat().st_uid == 0
    files.remove_tree(tmp_path / "k")
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_links_and_special_files_are_refused(tmp_path, kind):
    src = tree(tmp_path / "a")
    if kind == "link":
        (src / "variables" / "evil").symlink_to("/etc/passwd")
    else:
        os.mkfifo(src / "variables" / "evil")
    with pytest.raises(files.NotAModel, match="evil"):
        files.copy_tree(src, tmp_path / "k", what="model")


# --- the store: numbering, aliases, history -----------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")


def add(store, owner="ann", name="digits"):
    return store.add_model_version(owner, name, files_hash="0" * 64, files_bytes=1, path="model", run_id="r1",
                                   image_id="sha256:1", registered_by=owner, registered_at=time.time())


def test_versions_count_per_name_and_are_never_reused(store):
    assert [add(store).version for _ in range(3)] == [1, 2, 3]
    assert add(store, name="other").version == 1
    assert add(store, owner="bob").version == 1  # another owner's namespace
    registry.remove_version(store, "ann", "digits", 3)
    registry.remove_version(store, "ann", "digits", 2)
    assert add(store).version == 4  # 2 and 3 stay taken after their deletion
    assert [r.version for r in store.model_versions(store.get_model("ann", "digits").id)] == [1, 4]
    assert registry.resolve(store, "ann", "digits").version == 4
    with pytest.raises(NotFound, match="no version 3"):
        registry.resolve(store, "ann", "digits:3")


def test_aliases_move_and_every_move_is_history(store):
    for _ in range(3):
        add(store)
    assert registry.move_alias(store, "ann", "digits", "champion", 1)["previous"] is None
    assert registry.resolve(store, "ann", "digits@champion").version == 1
    assert registry.move_alias(store, "ann", "digits", "champion", 2)["previous"] == 1
    assert registry.move_alias(store, "ann", "digits", "champion", 2)["previous"] == 2  # no move: not recorded
    registry.move_alias(store, "ann", "digits", "challenger", 3)
    registry.move_alias(store, "ann", "digits", "champion", 1)  # a rollback
    registry.move_alias(store, "ann", "digits", "challenger", None)
    registry.remove_version(store, "ann", "digits", 1)  # takes champion with it
    moves = [(m["alias"], m["from_version"], m["to_version"], m["by"]) for m in registry.history(store, "ann", "digits")]
    assert moves == [("champion", None, 1, "ann"), ("champion", 1, 2, "ann"), ("challenger", None, 3, "ann"),
                     ("champion", 2, 1, "ann"), ("challenger", 3, None, "ann"), ("champion", 1, None, "ann")]
    assert all(m["at"].endswith("Z") for m in registry.history(store, "ann", "digits"))
    with pytest.raises(NotFound, match="no alias 'champion'"):
        registry.resolve(store, "ann", "digits@champion")
    with pytest.raises(NotFound, match="no version 9"):
        registry.move_alias(store, "ann", "digits", "champion", 9)
    with pytest.raises(NotFound):
        registry.move_alias(store, "ann", "digits", "nothere", None)


def test_other_users_models_do_not_exist_unless_shared(store):
    add(store)
    for ref in ("digits", "ann/digits", "ann/digits:1"):
        with pytest.raises(NotFound):
            registry.resolve(store, "bob", ref)
    assert registry.listing(store, "bob") == []
    assert registry.resolve(store, "root", "ann/digits", admin=True).owner == "ann"
    registry.share(store, "ann", "digits", True)
    assert registry.resolve(store, "bob", "ann/digits:1").version == 1
    assert [m["name"] for m in registry.listing(store, "bob")] == ["digits"]
    with pytest.raises(DlboxError, match="only its owner") as caught:
        registry.move_alias(store, "bob", "digits", "champion", 1, owner="ann")
    assert caught.value.code == "forbidden"


# --- registering a run's model ------------------------------------------------------------------


@pytest.fixture
def run(store):
    job = Job(id="a1b2c3d4e5f6", user="ann", state="succeeded", command=["true"], params={}, env={},
              image_ref="img", image_id="sha256:abc", lock_hash="l" * 64, git_commit="c" * 40,
              submitted_at=time.time())
    store.add_job(job)
    store.replace_metrics(job.id, [{"name": "acc", "step": 0, "value": 0.5}, {"name": "acc", "step": 1, "value": 0.9}])
    tree(jobs.run_dir(job.id) / "artifacts" / "model")
    (jobs.run_dir(job.id) / "artifacts" / "notamodel").mkdir()
    return job


@pytest.fixture
def reader(monkeypatch):
    """engine.run_reader answering `answer` (bytes or an object) and recording what it was asked."""
    from dlbox.engine import api as engine

    calls, state = [], {"answer": SIG, "code": 0}

    def fake(image, command, *, entrypoint, source, target, max_output, timeout=120):
        calls.append({"image": image, "source": source, "files": sorted(os.listdir(source))})
        raw = state["answer"] if isinstance(state["answer"], bytes) else json.dumps(state["answer"]).encode()
        return state["code"], raw, "boom"

    monkeypatch.setattr(engine, "run_reader", fake)
    return state | {"calls": calls, "set": state.update}


def nothing_left(store):
    root = files.root()
    return store.models() == [] and os.listdir(root / "objects") == [] and os.listdir(root / "staging") == []


def test_register_keeps_files_lineage_and_signature(store, run, reader):
    made = registry.register(store, "ann", "digits", run=run.id)
    assert (made.name, made.version, made.owner, made.run_id) == ("digits", 1, "ann", run.id)
    assert (made.image_id, made.lock_hash, made.git_commit) == ("sha256:abc", "l" * 64, "c" * 40)
    assert made.metrics == {"acc": 0.9} and made.registered_by == "ann" and made.code_hash is None
    assert list(made.signature["signatures"]) == ["serving_default"]  # the init op is not a serving signature
    assert reader["calls"][0]["image"] == "sha256:abc"
    assert made.files == files.object_dir(made.files_hash) and (made.files / "saved_model.pb").read_bytes() == b"pb"
    assert files.tree_hash(made.files).files_hash == made.files_hash
    files.remove_tree(jobs.run_dir(run.id))  # the run's folder goes: the version does not
    again = registry.resolve(store, "ann", "digits:1")
    assert again == made and (again.files / "variables").is_dir()
    assert os.listdir(files.root() / "staging") == []


def test_same_files_twice_are_two_versions_of_one_object(store, run, reader):
    a = registry.register(store, "ann", "digits", run=run.id)
    b = registry.register(store, "ann", "digits", run=run.id)
    assert (a.version, b.version, a.files) == (1, 2, b.files)
    registry.remove_version(store, "ann", "digits", 1)
    assert b.files.is_dir()  # still used by version 2
    registry.remove_version(store, "ann", "digits", 2)
    assert not b.files.exists()


@pytest.mark.parametrize(("path", "answer", "message"), [
    ("notamodel", SIG, "is no SavedModel (it has no saved_model.pb)"),
    ("missing", SIG, "there is no missing"),
    ("model", {"tags": ["serve"], "signatures": {"__saved_model_init_op": SIG["signatures"]["__saved_model_init_op"]}},
     "has no serving signature"),
    ("model", {"error": "saved_model.pb is not a SavedModel (DecodeError)"}, "is no SavedModel"),
    ("model", b"\xff" * 10, "not JSON"),
    ("model", [1, 2], "not an object"),
    ("model", {"tags": ["serve"], "signatures": {"s": {"method_name": "m", "inputs": {"x": {
        "name": "x:0", "dtype": "float; rm -rf", "shape": [1]}}, "outputs": {}}}}, "bad dtype"),
    ("model", {"tags": ["serve"], "signatures": {"s": {"method_name": "m", "inputs": {"x": {
        "name": "x:0", "dtype": "DT_FLOAT", "shape": ["1"]}}, "outputs": {}}}}, "bad shape"),
])
def test_refusals_leave_nothing_behind(store, run, reader, path, answer, message):
    reader["set"](answer=answer)
    with pytest.raises(files.NotAModel, match=refs.re.escape(message)) as caught:
        registry.register(store, "ann", "digits", run=run.id, path=path)
    assert caught.value.code == "not_a_model" and "\n" not in caught.value.message
    assert nothing_left(store)


def test_register_refuses_bad_input_and_other_users_runs(store, run, reader):
    for bad in ("../x", "/etc", "a/../b", ""):
        with pytest.raises(UsageError):
            registry.register(store, "ann", "digits", run=run.id, path=bad)
    with pytest.raises(UsageError):
        registry.register(store, "ann", "Bad Name", run=run.id)
    with pytest.raises(NotFound, match="no run"):
        registry.register(store, "bob", "digits", run=run.id)
    with pytest.raises(NotFound):
        registry.register(store, "ann", "digits", run="nope")
    assert nothing_left(store) and reader["calls"] == []


def test_a_helper_failing_is_refused_in_one_line(store, run, reader):
    reader["set"](code=1, answer=b"")
    with pytest.raises(files.NotAModel, match="boom"):
        registry.register(store, "ann", "digits", run=run.id)
    assert nothing_left(store)


def test_an_unfinished_run_is_refused(store, run, reader):
    with store.session() as s:
        s.get(Job, run.id).state = "running"
    with pytest.raises(DlboxError) as caught:
        registry.register(store, "ann", "digits", run=run.id)
    assert caught.value.code == "not_finished" and nothing_left(store)


def test_signature_check_bounds_size():
    with pytest.raises(files.NotAModel, match="too large"):
        signature.check(b" " * (signature.MAX_OUTPUT + 1), what="m")


def test_the_signature_helper_is_hardened_and_its_output_capped(monkeypatch):
    """engine.run_reader against a fake SDK: what the container is made with, and the stdout cap."""
    from dlbox.engine import api as engine

    made, removed = {}, []

    class FakeAPI:
        def create_host_config(self, **kwargs):
            return dict(kwargs)

        def inspect_image(self, image):
            return {"Config": {"Labels": {"dlbox.uid": "1000", "dlbox.gid": "1000"}}}

        def create_container(self, image, **kwargs):
            made.update(kwargs, image=image)
            return {"Id": "c1"}

        def start(self, container):
            pass

        def wait(self, container, timeout=None):
            return {"StatusCode": 0}

        def logs(self, container, stdout=True, stderr=True, stream=False, tail="all"):
            return iter([b"x" * 600, b"y" * 600]) if stream else b""

        def remove_container(self, container, force=False):
            removed.append(container)

    class FakeClient:
        api = FakeAPI()

    monkeypatch.setattr(engine, "client", lambda: FakeClient())
    code, out, why = engine.run_reader("sha256:img", ["-c", "x"], entrypoint=["python"], source="/src",
                                       target="/m", max_output=1000)
    assert code is None and len(out) == 1000 and "too long" in why and removed == [{"Id": "c1"}]
    host = made["host_config"]
    assert host["Binds"] == ["/src:/m:ro"] and host["read_only"] is True and host["network_mode"] == "none"
    assert host["cap_drop"] == ["ALL"] and "no-new-privileges" in host["security_opt"]
    assert made["network_disabled"] is True and made["user"] == "1000:1000" and made["image"] == "sha256:img"
