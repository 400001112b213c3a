"""Deployments' pure parts: the serve flags checked, and the reconcile decision given engine facts."""

from __future__ import annotations

import pytest

from dlbox.deployments.intent import Action, Facts, Request, Want, check, decide, parse_versions
from dlbox.errors import UsageError


def test_a_plain_request_follows_nothing_and_is_named_after_the_model():
    req = check(Request("digits"))
    assert (req.model, req.alias, req.versions, req.name, req.batch_timeout_ms) == ("digits", None, None, "digits",
                                                                                    None)


@pytest.mark.parametrize(("given", "alias", "versions"), [
    (Request("digits@champion"), "champion", None),
    (Request("digits:3"), None, (3,)),
    (Request("digits", alias="champion"), "champion", None),
    (Request("ann/digits", versions=(1, 2)), None, (1, 2)),
])
def test_the_model_reference_or_the_flags_say_what_is_served(given, alias, versions):
    req = check(given)
    assert (req.alias, req.versions) == (alias, versions)


@pytest.mark.parametrize(("given", "message"), [
    (Request("digits", alias="champion", versions=(1,)), "not both"),
    (Request("digits@champion", versions=(1,)), "not both"),
    (Request("digits", replicas=9), "--replicas 9: 1 to 8 serving containers"),
    (Request("digits", replicas=0), "--replicas 0: 1 to 8 serving containers"),
    (Request("digits", port=70000), "a port is 1 to 65535"),
    (Request("digits", port=9000, grpc_port=9000), "give two ports"),
    (Request("digits", host="my host"), "give an IP address"),
    (Request("digits", memory=1024), "at least 64m"),
    (Request("digits", batch_max=1), "2 to 1024"),
    (Request("digits", batch_max=5000), "2 to 1024"),
    (Request("digits", batch_timeout_ms=5.0), "needs --batch-max"),
    (Request("digits", batch_max=8, batch_timeout_ms=0.0), "more than 0"),
    (Request("d" * 50), "give --name"),
    (Request("digits", name="Bad Name"), "--name"),
    (Request("digits", alias="bad alias!"), "alias"),
])
def test_bad_flags_are_one_line_usage_errors(given, message):
    with pytest.raises(UsageError) as raised:
        check(given)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_batching_gets_its_default_timeout_only_when_on():
    assert check(Request("digits", batch_max=16)).batch_timeout_ms == 2.0
    assert check(Request("digits", batch_max=16, batch_timeout_ms=5.0)).batch_timeout_ms == 5.0


def test_parse_versions():
    assert parse_versions("1, 2,5") == (1, 2, 5)
    for bad in ("", "1,,2", "1,1", "x", "-1"):
        with pytest.raises(UsageError):
            parse_versions(bad)


WANT = Want(image_id="sha256:a", versions=(2,), labels={"champion": 2})
RUNNING = Facts(status="running", image_id="sha256:a", versions=(1, 2), labels={"champion": 2})


@pytest.mark.parametrize(("facts", "kind"), [
    (RUNNING, "none"),
    (Facts(status=None), "create"),
    (Facts(status="dead", image_id="sha256:a"), "recreate"),
    (Facts(status="created", image_id="sha256:a"), "recreate"),
    (Facts(status="exited", exit_code=0, image_id="sha256:a"), "recreate"),
    (Facts(status="exited", exit_code=137, restart_count=5, restart_max=5), "recreate"),
    (Facts(status="exited", exit_code=137, restart_count=2, restart_max=5), "wait"),
    (Facts(status="removing"), "wait"),
    (Facts(status="restarting", image_id="sha256:a", versions=(2,), labels={"champion": 2}), "none"),
    (Facts(status="running", image_id="sha256:b", versions=(2,), labels={"champion": 2}), "recreate"),
])
def test_the_decision_from_engine_facts(facts, kind):
    assert decide(WANT, facts).kind == kind


def test_an_alias_moved_in_the_registry_is_followed_loading_a_version_not_linked_yet():
    facts = Facts(status="running", image_id="sha256:a", versions=(1,), labels={"champion": 1})
    assert decide(WANT, facts) == Action("move", "follows the registry: champion -> 2", (2,))
    back = Want(image_id="sha256:a", versions=(1,), labels={"champion": 1})
    assert decide(back, RUNNING) == Action("move", "follows the registry: champion -> 1", ())  # rollback: linked


def test_pinned_versions_are_served_without_labels():
    want = Want(image_id="sha256:a", versions=(1, 2), serve=(1, 2))
    assert decide(want, Facts(status="running", image_id="sha256:a", versions=(1, 2), serve=(2, 1))).kind == "none"
    assert decide(want, Facts(status="running", image_id="sha256:a", versions=(1,), serve=(1,))).add == (2,)
