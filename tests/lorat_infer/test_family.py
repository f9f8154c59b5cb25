"""Families and state records: pickle-free round trips, slot pool reuse, resumed tracks move once."""

import gc
import json

import numpy as np
import pytest
import torch

from lorat_infer import TrackingEngine, build_model
from lorat_infer.eval.synthetic import generate_sequence
from lorat_infer.family import LoRATFamily, family_for, state_from_record, state_to_record
from lorat_infer.slots import SlotPool


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny").eval()


def test_family_is_picked_from_the_model(model):
    assert isinstance(family_for(model), LoRATFamily)
    with pytest.raises(TypeError, match="no tracking family"):
        family_for(torch.nn.Linear(2, 2))


def test_state_record_round_trip_resumes_identically(model):
    seq = generate_sequence(4, 4)
    engine = TrackingEngine(model, precision="fp32")
    (state,) = engine.initialize([seq.frames[0]], [seq.boxes[0]])
    ((state, _),) = engine.step([state], [seq.frames[1]])
    arrays, meta = state_to_record(state)
    assert meta == {"family": "lorat", "layout": 1, "frame_index": 1}
    json.dumps(meta)
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    restored = state_from_record({k: v.copy() for k, v in arrays.items()}, json.loads(json.dumps(meta)))
    assert restored.slot is None and restored.template_tokens.device.type == "cpu"
    ((_, ra),) = engine.step([state], [seq.frames[2]])
    ((b, rb),) = engine.step([restored], [seq.frames[2]])
    np.testing.assert_array_equal(ra.box_xyxy, rb.box_xyxy)
    assert b.slot is not None and engine.family.pool.owns(b.slot)  # moved to the pool once
    ((c, _),) = engine.step([b], [seq.frames[3]])
    assert c.slot is b.slot


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, m: m.update(family="other"), "unknown tracking family"),
        (lambda a, m: m.update(layout=99), "layout"),
        (lambda a, m: a.update(box_xyxy=np.zeros(3)), "box_xyxy"),
        (lambda a, m: a.pop("template_tokens"), "template_tokens"),
    ],
)
def test_malformed_records_are_refused(model, change, message):
    engine = TrackingEngine(model, precision="fp32")
    seq = generate_sequence(4, 1)
    (state,) = engine.initialize([seq.frames[0]], [seq.boxes[0]])
    arrays, meta = state_to_record(state)
    change(arrays, meta)
    with pytest.raises(ValueError, match=message):
        state_from_record(arrays, meta)


def test_slots_are_reused_after_their_states_die_and_the_pool_grows():
    pool = SlotPool((2, 3), torch.float32, torch.device("cpu"), capacity=2)
    rows = torch.arange(18, dtype=torch.float32).view(3, 2, 3)
    slots = pool.put(rows)  # grows past the initial capacity
    assert len(pool) == 3 and pool.data.shape[0] == 4
    torch.testing.assert_close(pool.gather([slots[2], slots[0]]), rows[[2, 0]])
    index = slots[1].index
    del slots[1]
    gc.collect()
    assert len(pool) == 2
    (again,) = pool.put(torch.ones(1, 2, 3))
    assert again.index == index
    torch.testing.assert_close(pool.view(again), torch.ones(2, 3))


def test_states_follow_the_pool_when_it_grows(model):
    engine = TrackingEngine(model, precision="fp32")
    seq = generate_sequence(5, 2)
    early = engine.initialize([seq.frames[0]] * 2, [seq.boxes[0]] * 2)
    before = engine.family.pool.data
    more = engine.initialize([seq.frames[0]] * 70, [seq.boxes[0]] * 70)  # past the initial 64 rows
    pool = engine.family.pool.data
    assert pool.shape[0] > before.shape[0]
    stepped, _ = engine.step_arrays(early, [seq.frames[1]] * 2)
    for old, new in zip(early, stepped):
        torch.testing.assert_close(new.template_tokens, old.template_tokens)
        assert new.template_tokens.untyped_storage().data_ptr() == pool.untyped_storage().data_ptr()
    assert len(more) == 70
