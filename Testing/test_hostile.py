"""The adversarial campaign (Testing/hostile) in CI: its harness's self-check (the payloads are live,
the fork server answers as a fresh process does) and a fixed sample of its cases, one or two per
category, each judged by the campaign's own contract. The whole campaign (~660 cases, 20-35 min)
runs with ``python Testing/hostile/campaign.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: The sample: rejections answered before and after torch, pickle payloads in a model folder, an
#: import and the API, '$...' expressions in a bundle and a CSV, and two runs that must succeed.
SAMPLE = (
    "GEN-011",  # generate --age 300
    "GEN-024",  # generate --age 45 (valid: writes the volume and its sidecar)
    "GEN-099",  # generate --raw "age=$__import__('os')"
    "GEN-119",  # generate --model 'evil\nmodel'
    "LAB-001",  # labels --wmh 0.01 --partial-volumes (valid)
    "LAB-002",  # labels --wmh -0.1
    "MOD-052",  # a model folder whose diffusion.pt is a pickle payload
    "MOD-057",  # models import <pickle payload.pt> --allow-unverified
    "MOD-139",  # models import <bundle: network definitions as '$...' expressions>
    "BAT-007",  # batch --conditions <CSV: unknown column>
    "BAT-017",  # batch --conditions <CSV: a '$...' expression>
    "API-175",  # load_card(None)
    "API-176",  # checkpoints.read_state_dict(<pickle payload>)
)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    records = tmp_path_factory.mktemp("campaign") / "records.json"
    only = [arg for case in SAMPLE for arg in ("--only", case)]
    done = subprocess.run(
        [sys.executable, str(REPO / "Testing" / "hostile" / "campaign.py"), "--json", str(records), *only],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, f"the campaign ran: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return json.loads(records.read_text()), done.stdout


def test_the_harness_checks_itself(campaign):
    _, output = campaign
    assert "a plain pickle.load of the payload DID create its marker" in output, f"live payloads: {output[-1500:]}"
    assert "real subprocess and fork server agree" in output, f"the fork server is faithful: {output[-1500:]}"


def test_the_sample_runs_every_case_once(campaign):
    records, _ = campaign
    assert sorted(r["id"] for r in records) == sorted(SAMPLE), f"cases run: {[r['id'] for r in records]}"


def test_no_case_of_the_sample_is_broken(campaign):
    records, _ = campaign
    broken = [f"{r['id']} {r['input']}: {r['detail']}" for r in records if r["outcome"] == "broken"]
    assert broken == [], "broken cases:\n" + "\n".join(broken)


def test_the_valid_runs_are_accepted_and_the_bad_ones_rejected(campaign):
    records, _ = campaign
    outcome = {r["id"]: r["outcome"] for r in records}
    for case in ("GEN-024", "LAB-001"):
        assert outcome[case] == "accepted correctly", f"{case} is a valid run: {outcome[case]}"
    rejected = sorted(c for c, o in outcome.items() if o == "rejected cleanly")
    assert len(rejected) == len(SAMPLE) - 2, f"every other case is rejected cleanly: {rejected}"
