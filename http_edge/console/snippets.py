"""Ready-to-run code for calling one model, per task: Python ``requests`` with the payload of the
seed platform's guide for that task (its ``/models/<id>/proxy/v1/...`` paths), the ``openai`` SDK
where the task has one, and curl. The base URL, the model id and (right after creation) the token
are filled in; ``<api_key>`` otherwise. Every snippet is run against a gateway by the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PLACEHOLDER = "<api_key>"


@dataclass(frozen=True)
class Snippet:
    language: str  # "python" or "shell"
    title: str
    code: str


def _py(value: str) -> str:
    """A Python string literal of ``value``."""
    return json.dumps(value)


def _sh(value: str) -> str:
    """A single-quoted shell word of ``value``."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _requests(base: str, model: str, key: str, body: str) -> str:
    return (f"import requests\n\napi_key = {_py(key)}\nmodel_version_id = {_py(model)}\n"
            f"base_url = {_py(base)}\n" + body)


_PROXY = 'inference_url = f"{base_url}/models/{model_version_id}/proxy/v1'
_CHAT = _PROXY + '''/chat/completions"
headers = {"Authorization": f"Bearer {api_key}", "accept": "text/event-stream"}
payload = {
    "inputs": "What is Deep Learning?",
    "max_new_tokens": 200,
    "do_sample": False,
    "stream": True,
}
with requests.post(inference_url, headers=headers, json=payload, stream=True,
                   timeout=120) as response:
    response.raise_for_status()
    for line in response.iter_lines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            chunk = json.loads(line[6:])
            for choice in chunk["choices"]:
                print(choice["delta"].get("content") or "", end="", flush=True)
print()
'''

_PAYLOADS: dict[str, tuple[str, str]] = {
    # task: (path under proxy/v1, the request lines after the URL)
    "classification": ("classify", 'payload = {"inputs": "this is good!"}\n'
                       "response = requests.post(inference_url, headers=headers, json=payload,"
                       " timeout=120)\n"),
    "translation": ("translate", 'payload = {"text": "A man walking on the moon"}\n'
                    "response = requests.post(inference_url, headers=headers, json=payload,"
                    " timeout=120)\n"),
    "image": ("generate-image", 'payload = {"prompt": "A man walking on the moon",'
              ' "num_inference_steps": 20}\n'
              "response = requests.post(inference_url, headers=headers, json=payload,"
              " timeout=120)\n"),
    "embedding": ("embed", 'payload = {"inputs": "What is Deep Learning?"}\n'
                  "response = requests.post(inference_url, headers=headers, json=payload,"
                  " timeout=120)\n"),
    "rerank": ("rerank", 'payload = {\n    "query": "What is Deep Learning?",\n'
               '    "texts": ["Deep Learning is not...", "Deep learning is..."],\n}\n'
               "response = requests.post(inference_url, headers=headers, json=payload,"
               " timeout=120)\n"),
    "predict": ("predict", "payload = [1, 2, 3]\n"
                "response = requests.post(inference_url, headers=headers, json=payload,"
                " timeout=120)\n"),
}

_CURL_BODIES: dict[str, str] = {
    "classification": '{"inputs": "this is good!"}',
    "translation": '{"text": "A man walking on the moon"}',
    "image": '{"prompt": "A man walking on the moon", "num_inference_steps": 20}',
    "embedding": '{"inputs": "What is Deep Learning?"}',
    "rerank": '{"query": "What is Deep Learning?", "texts": ["Deep Learning is not...", '
              '"Deep learning is..."]}',
    "predict": "[1, 2, 3]",
}


def _python(task: str, base: str, model: str, key: str) -> str:
    if task == "chat":
        return "import json\n" + _requests(base, model, key, _CHAT)
    if task == "completion":
        return _requests(base, model, key, '''inference_url = f"{base_url}/v1/completions"
headers = {"Authorization": f"Bearer {api_key}"}
payload = {"model": model_version_id, "prompt": "What is Deep Learning?", "max_tokens": 200}
response = requests.post(inference_url, headers=headers, json=payload, timeout=120)
response.raise_for_status()
print(response.json()["choices"][0]["text"])
''')
    if task == "transcription":
        return _requests(base, model, key, _PROXY + '''/transcript"
headers = {"Authorization": f"Bearer {api_key}"}
with open("audio.wav", "rb") as audio:  # your recording (wav, mp3, flac, ogg, webm, m4a)
    files = {"file": ("audio.wav", audio, "audio/wav")}
    response = requests.post(inference_url, headers=headers, files=files, timeout=120)
response.raise_for_status()
print(response.json())
''')
    if task == "speech":
        return _requests(base, model, key, _PROXY + '''/generate-speech"
headers = {"Authorization": f"Bearer {api_key}"}
# Each speech model has its own schema: the fields to send.
schema = requests.get(f"{inference_url}/schema", headers=headers, timeout=120)
schema.raise_for_status()
print([field["name"] for field in schema.json()])
payload = {"prompt": "Hey, how are you doing today?"}
response = requests.post(inference_url, headers=headers, json=payload, timeout=120)
response.raise_for_status()
print(len(response.content), "bytes of audio")
''')
    path, lines = _PAYLOADS[task]
    return _requests(base, model, key, f'inference_url = f"{{base_url}}/models/'
                     f'{{model_version_id}}/proxy/v1/{path}"\n'
                     'headers = {"Authorization": f"Bearer {api_key}"}\n' + lines +
                     "response.raise_for_status()\nprint(response.json())\n")


def _openai(task: str, base: str, model: str, key: str) -> str | None:
    head = (f"from openai import OpenAI\n\nclient = OpenAI(base_url={_py(base + '/v1')}, "
            f"api_key={_py(key)})\n")
    m = _py(model)
    bodies = {
        "chat": f'''stream = client.chat.completions.create(
    model={m},
    messages=[{{"role": "user", "content": "What is Deep Learning?"}}],
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
''',
        "completion": f'''completion = client.completions.create(
    model={m}, prompt="What is Deep Learning?", max_tokens=200)
print(completion.choices[0].text)
''',
        "embedding": f'''result = client.embeddings.create(model={m}, input=["What is Deep Learning?"])
print(len(result.data[0].embedding), "dimensions")
''',
        "transcription": f'''with open("audio.wav", "rb") as audio:  # your recording
    transcript = client.audio.transcriptions.create(model={m}, file=audio)
print(transcript.text)
''',
        "speech": f'''speech = client.audio.speech.create(model={m}, voice="alloy",
                                    input="Hey, how are you doing today?")
print(len(speech.content), "bytes of audio")
''',
        "image": f'''image = client.images.generate(model={m}, prompt="A man walking on the moon")
print(len(image.data[0].b64_json or ""), "base64 characters")
''',
    }
    body = bodies.get(task)
    return head + body if body is not None else None


def _curl(task: str, base: str, model: str, key: str) -> str:
    auth = '-H "Authorization: Bearer $API_KEY"'
    proxy = f"{base}/models/{model}/proxy/v1"
    head = f"API_KEY={_sh(key)}\n"
    if task == "chat":
        body = json.dumps({"inputs": "What is Deep Learning?", "max_new_tokens": 200,
                           "do_sample": False, "stream": True})
        return (head + f"curl -sSfN {_sh(proxy + '/chat/completions')} {auth} \\\n"
                f"  -H 'Content-Type: application/json' -d {_sh(body)}\n")
    if task == "completion":
        body = json.dumps({"model": model, "prompt": "What is Deep Learning?",
                           "max_tokens": 200})
        return (head + f"curl -sSf {_sh(base + '/v1/completions')} {auth} \\\n"
                f"  -H 'Content-Type: application/json' -d {_sh(body)}\n")
    if task == "transcription":
        return (head + f"curl -sSf {_sh(proxy + '/transcript')} {auth} \\\n"
                "  -F 'file=@audio.wav;type=audio/wav'\n")
    if task == "speech":
        body = json.dumps({"prompt": "Hey, how are you doing today?"})
        return (head + f"curl -sSf {_sh(proxy + '/generate-speech/schema')} {auth}\n"
                f"curl -sSf {_sh(proxy + '/generate-speech')} {auth} \\\n"
                f"  -H 'Content-Type: application/json' -d {_sh(body)} -o speech.out\n")
    path = _PAYLOADS[task][0]
    return (head + f"curl -sSf {_sh(proxy + '/' + path)} {auth} \\\n"
            f"  -H 'Content-Type: application/json' -d {_sh(_CURL_BODIES[task])}\n")


TASKS = ("chat", "completion", "embedding", "rerank", "classification", "transcription",
         "speech", "image", "translation", "predict")


def snippets(task: str, base: str, model: str, key: str | None = None) -> list[Snippet]:
    """The snippets for a model of ``task`` served at ``base`` (the edge's URL)."""
    key = key or PLACEHOLDER
    base = base.rstrip("/")
    out = [Snippet("python", "Python (requests)", _python(task, base, model, key))]
    sdk = _openai(task, base, model, key)
    if sdk is not None:
        out.append(Snippet("python", "Python (openai SDK)", sdk))
    out.append(Snippet("shell", "curl", _curl(task, base, model, key)))
    return out
