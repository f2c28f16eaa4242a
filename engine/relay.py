"""Streaming of outputs: vLLM's DELTA outputs for one Generate request -> protocol messages."""

from __future__ import annotations

from typing import Any

from scaleserve.engine.output_parsing import OutputParsing
from scaleserve.engine.proto import engine_pb2

GenerateResponse = engine_pb2.GenerateResponse
Usage = engine_pb2.Usage


class Relay:
    """vLLM's outputs for one request -> protocol messages, one per choice that moved.

    A choice's last message carries its finish_reason; the last choice to finish also carries
    the request's usage, so a reader knows the stream is complete after n finishes.
    """

    def __init__(self, params: Any, prompt_len: int | None, parsing: OutputParsing | None) -> None:
        self.parsing = parsing
        self.n: int = params.n
        self.top = params.logprobs
        self.prompt_top = params.prompt_logprobs
        self.prompt_len = prompt_len
        self.finished = 0
        self.tokens = 0
        self.outcome = "cancelled"
        self.first = True

    @property
    def done(self) -> bool:
        return self.finished >= self.n

    def messages(self, out: Any) -> list[Any]:
        result = []
        for completion in out.outputs:
            self.tokens += len(completion.token_ids)
            message = GenerateResponse(
                text=completion.text, token_ids=completion.token_ids, index=completion.index
            )
            if self.top is not None:
                message.logprobs.extend(token_logprobs(completion.token_ids, completion.logprobs))
            if self.first and self.prompt_top is not None and out.prompt_logprobs:
                ids = out.prompt_token_ids[1:]
                message.prompt_logprobs.extend(token_logprobs(ids, out.prompt_logprobs[1:]))
            self.first = False
            if completion.finish_reason is not None:
                self._finish(message, out, completion)
            if self.parsing is not None:
                self.parsing.apply(message, out.prompt_token_ids, completion.finish_reason)
            result.append(message)
        return result

    def _finish(self, message: Any, out: Any, completion: Any) -> None:
        self.finished += 1
        message.finish_reason = completion.finish_reason
        if completion.stop_reason is not None:
            message.stop_reason = str(completion.stop_reason)
        if self.outcome == "cancelled" or completion.finish_reason == "abort":
            self.outcome = completion.finish_reason
        if self.done:
            prompt_tokens = self.prompt_len
            if prompt_tokens is None:
                prompt_tokens = len(out.prompt_token_ids or ())
            message.usage.CopyFrom(
                Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=self.tokens,
                    cached_prompt_tokens=out.num_cached_tokens or 0,
                )
            )


def token_logprobs(token_ids: Any, steps: Any) -> list[engine_pb2.TokenLogprob]:
    """One TokenLogprob per token: its logprob and vLLM's candidates in vLLM's order (the
    sampled token first, then the best by rank), which the OpenAI formats slice."""
    result = []
    for token_id, entries in zip(token_ids, steps or (), strict=False):
        sampled = entries.get(token_id) if entries else None
        result.append(
            engine_pb2.TokenLogprob(
                token_id=token_id,
                token=(sampled.decoded_token or "") if sampled else "",
                logprob=sampled.logprob if sampled else 0.0,
                top=[
                    engine_pb2.TopLogprob(
                        token_id=tid, token=lp.decoded_token or "", logprob=lp.logprob
                    )
                    for tid, lp in (entries or {}).items()
                ],
            )
        )
    return result
