"""The official `openai` client against a running `hmoe serve` with a real (tiny) model.

Started by scripts/server-tests.sh, which sets HMOE_BASE_URL, HMOE_MODEL and HMOE_API_KEY.
"""

import concurrent.futures
import json
import os
import time

import urllib.error
import urllib.request
import openai
import pytest

BASE = os.environ["HMOE_BASE_URL"].rstrip("/")
MODEL = os.environ["HMOE_MODEL"]
KEY = os.environ.get("HMOE_API_KEY", "none")


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=300)


def greedy(client, content, max_tokens=16, **kw):
    args = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0}
    return client.chat.completions.create(**(args | kw))


def stream_text(client, content, max_tokens=16, **kw):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        **kw,
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish, usage


def test_models_lists_the_served_model(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL]


def test_chat_shape_and_usage(client):
    r = greedy(client, "Tell me about the sea.", max_tokens=12)
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_equals_non_streaming_greedy(client):
    whole = greedy(client, "Count the waves.", max_tokens=20)
    text, finish, usage = stream_text(client, "Count the waves.", max_tokens=20)
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_stop_sequence_is_cut_and_reported(client):
    full = greedy(client, "Write a long list of words.", max_tokens=40).choices[0].message.content
    assert len(full) >= 8, f"the model produced too little text to test stops: {full!r}"
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    r = greedy(client, "Write a long list of words.", max_tokens=40, stop=[stop])
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == "stop"
    text, finish, _ = stream_text(client, "Write a long list of words.", max_tokens=40, stop=stop)
    assert text == expected
    assert finish == "stop"


def test_seeded_sampling_is_reproducible(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Pick a word."}], max_tokens=12, temperature=0.9, seed=1234)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_text_completion(client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, temperature=0)
    assert r.object == "text_completion"
    assert isinstance(r.choices[0].text, str)
    assert r.usage.completion_tokens <= 5


@pytest.mark.parametrize(
    "kw",
    [
        {"n": 2},
        {"temperature": -1},
        {"temperature": 3},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"max_tokens": 10**9},
        {"extra_body": {"seed": "abc"}},
        {"extra_body": {"top_k": -9}},
        {"stop": ["a", "b", "c", "d", "e"]},
    ],
)
def test_invalid_parameters_are_400(client, kw):
    with pytest.raises(openai.BadRequestError) as e:
        greedy(client, "hi", **({"max_tokens": 4} | kw))
    assert e.value.status_code == 400
    assert e.value.body["message"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_wrong_api_key_is_401():
    bad = openai.OpenAI(base_url=BASE + "/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def raw(method, path, body=None):
    """(status, JSON body) of a raw request, errors included."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    req = urllib.request.Request(BASE + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_malformed_and_oversized_bodies():
    status, body = raw("POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["message"]
    status, body = raw("POST", "/v1/chat/completions", b'{"model": 5}')
    assert status == 400 and body["error"]["param"] == "model"
    huge = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * ((4 << 20) + 1024)}]})
    status, body = raw("POST", "/v1/chat/completions", huge.encode())
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, body = raw("GET", "/no/such/route")
    assert status == 404 and "error" in body


def health():
    return raw("GET", "/health")[1]


def test_disconnect_mid_stream_frees_the_slot(client):
    before = health()["slots"]["cancelled"]
    with client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Go on forever."}], max_tokens=3000, stream=True
    ) as stream:
        for _chunk in stream:
            break  # leave after the first chunk; closing the response drops the connection
    deadline = time.time() + 30  # liveness bound, not a timing assertion
    while time.time() < deadline:
        h = health()
        if h["slots"]["active"] == 0 and h["slots"]["cancelled"] > before:
            return
        time.sleep(0.05)
    pytest.fail(f"the slot was not freed: {health()}")


PROMPTS = [f"Request number {i}: describe colour {c}." for i, c in enumerate(["red", "green", "blue", "amber", "violet", "grey", "teal", "gold"])]


def test_eight_concurrent_streams_equal_their_solo_runs(client):
    solo = [stream_text(client, p, max_tokens=24)[0] for p in PROMPTS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda p: stream_text(client, p, max_tokens=24)[0], PROMPTS))
    assert together == solo
    assert len(set(solo)) > 1, "different prompts should give different outputs"
