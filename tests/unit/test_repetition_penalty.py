"""vLLM's `repetition_penalty` in the numpy sampler: every token of the prompt or of the output so
far has its logit divided by the penalty where positive and multiplied by it where not, once per
token however often it occurs; the request field maps into SamplingParams and is checked as vLLM
checks it (> 0 and finite)."""

from __future__ import annotations

import pickle

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from aios_serve.api.common.sampling import sampling_params
from aios_serve.api.completions.protocol import CompletionRequest
from aios_serve.engine.generation.sampling import SamplingParams, SequenceSampler, repetition_ids
from aios_serve.engine.generation.sequence import RequestState
from aios_serve.engine.generation.worker.messages import Submit

F32 = np.float32
ROW = np.array([0.5, 2.0, -1.0, 1.5, -0.5, 3.0, -2.0, 0.0], dtype=np.float32)
"""Token 1 (positive) and 2 (negative) come from the prompt, 3 (positive) and 4 (negative) from the
output; 0, 5 and 6 are never seen; 7 is a seen token at exactly zero."""
PROMPT = [1, 2, 1, 7, 2]
OUTPUT = [3, 4, 3, 3]


def sampler(penalty: float, prompt: list[int] = PROMPT, **fields: object) -> SequenceSampler:
    params = SamplingParams(max_tokens=8, temperature=0.0, repetition_penalty=penalty, **fields)  # type: ignore[arg-type]
    return SequenceSampler(params, 0, [], repetition_ids(prompt, params))


def processed(s: SequenceSampler, row: npt.NDArray[np.float32] = ROW) -> npt.NDArray[np.float32]:
    return s._processed(row, n_generated=8)


@pytest.mark.parametrize("penalty", [1.3, 2.0, 0.7, 5.0])
def test_seen_tokens_are_divided_or_multiplied_exactly(penalty: float) -> None:
    s = sampler(penalty)
    for token in OUTPUT:
        s.record(token)
    out = processed(s)
    p = F32(penalty)
    assert out[1] == F32(2.0) / p  # prompt, positive
    assert out[2] == F32(-1.0) * p  # prompt, negative
    assert out[3] == F32(1.5) / p  # output (three times: penalised once), positive
    assert out[4] == F32(-0.5) * p  # output, negative
    assert out[7] == 0.0
    for never_seen in (0, 5, 6):
        assert out[never_seen] == ROW[never_seen]
    assert out.dtype == np.float32 and ROW[1] == 2.0  # the input row is left as it was


def test_output_tokens_count_from_when_they_are_generated() -> None:
    s = sampler(2.0)
    assert processed(s)[3] == 1.5
    s.record(3)
    assert processed(s)[3] == 0.75
    s.record(3)
    assert processed(s)[3] == 0.75  # not compounded by repeats
    s.record(1)  # already in the prompt: still once
    assert processed(s)[1] == 1.0


def test_penalty_one_changes_nothing() -> None:
    params = SamplingParams(max_tokens=8)
    assert repetition_ids(PROMPT, params).size == 0  # nothing kept when it is off
    s = SequenceSampler(params, 0, [], np.unique(PROMPT))
    for token in OUTPUT:
        s.record(token)
    assert processed(s).tobytes() == ROW.tobytes()


def test_greedy_picks_change_as_predicted() -> None:
    row = np.array([0.0, 3.0, 2.0, 1.8, -5.0], dtype=np.float32)
    assert sampler(1.0, prompt=[1]).sample(row, 0) == 1
    s = sampler(2.0, prompt=[1])
    assert s.sample(row, 0) == 2  # 3.0 / 2 = 1.5 falls below 2.0
    s.record(2)
    assert s.sample(row, 1) == 3  # then 2.0 / 2 = 1.0 falls below 1.8
    s.record(3)
    assert s.sample(row, 2) == 1  # 1.5 beats 1.0 and 0.9
    # all negative: multiplying pushes a seen token further down
    negative = np.array([-1.0, -1.2, -3.0], dtype=np.float32)
    assert sampler(1.0, prompt=[0]).sample(negative, 0) == 0
    assert sampler(1.5, prompt=[0]).sample(negative, 0) == 1  # -1.5 < -1.2
    # below 1 it favours repeats
    assert sampler(0.5, prompt=[1]).sample(np.array([2.0, 1.5], dtype=np.float32), 0) == 1


def test_order_bias_then_repetition_then_frequency_and_presence() -> None:
    """vLLM v1: logit bias, then repetition, then frequency and presence."""
    s = sampler(2.0, prompt=[0], logit_bias={0: 3.0}, frequency_penalty=0.5, presence_penalty=0.25)
    s.record(0)
    s.record(0)
    out = processed(s, np.array([1.0, 0.0], dtype=np.float32))
    assert out[0] == (1.0 + 3.0) / 2.0 - 0.5 * 2 - 0.25  # not 1/2 + 3 - ..., nor (4 - 1.25) / 2


def test_prompt_ids_past_the_logits_row_are_skipped() -> None:
    """A row narrower than the prompt's ids (never from a served model, whose prompts are checked
    against its vocabulary) penalises the ids it has rather than failing."""
    s = sampler(2.0, prompt=[1, 9])
    assert processed(s, np.array([1.0, 1.0], dtype=np.float32)).tolist() == [1.0, 0.5]


def test_min_tokens_mask_survives_the_penalty() -> None:
    params = SamplingParams(max_tokens=8, temperature=0.0, repetition_penalty=1.5, min_tokens=2)
    s = SequenceSampler(params, 0, [2], repetition_ids([2], params))
    out = s._processed(np.array([0.0, -1.0, 5.0], dtype=np.float32), 0)
    assert out[2] == -np.inf and out[1] == -1.0


def test_request_state_gives_every_choice_the_prompt() -> None:
    params = SamplingParams(max_tokens=8, temperature=0.0, repetition_penalty=4.0)
    state = RequestState([0, 1, 0], params, 2, [], lambda update: None)
    row = np.array([1.0, 3.0, 2.0], dtype=np.float32)
    assert [seq.sampler.sample(row, 0) for seq in state.seqs] == [2, 2]
    plain = RequestState([0, 1, 0], SamplingParams(max_tokens=8, temperature=0.0), 1, [], lambda u: None)
    assert plain.seqs[0].sampler.sample(row, 0) == 1


def test_params_cross_the_worker_pipe() -> None:
    params = SamplingParams(max_tokens=8, repetition_penalty=1.25)
    message = pickle.loads(pickle.dumps(Submit(1, [1, 2], params, 1)))
    assert message.params.repetition_penalty == 1.25


def test_request_field_maps_and_defaults_to_off() -> None:
    def params(**body: object) -> SamplingParams:
        return sampling_params(CompletionRequest(model="m", prompt="x", **body), 8, None)  # type: ignore[arg-type]

    assert params().repetition_penalty == 1.0
    assert params(repetition_penalty=None).repetition_penalty == 1.0
    assert params(repetition_penalty=1.5).repetition_penalty == 1.5
    assert params(repetition_penalty=3.0).repetition_penalty == 3.0  # vLLM sets no upper bound


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan")])
def test_invalid_values_name_the_field(value: float) -> None:
    with pytest.raises(ValidationError) as raised:
        CompletionRequest(model="m", prompt="x", repetition_penalty=value)
    assert [error["loc"] for error in raised.value.errors()] == [("repetition_penalty",)]
