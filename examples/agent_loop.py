"""An agent with long-term memory: any OpenAI-compatible chat endpoint, ltm's tools, and every turn logged.

    export LTM_CHAT_BASE_URL=https://api.openai.com/v1 LTM_CHAT_MODEL=gpt-4o-mini LTM_CHAT_API_KEY=sk-...
    ltm ingest manual.pdf
    python examples/agent_loop.py "Please speak a bit faster"          # the model calls settings_set
    python examples/agent_loop.py "How do I reset the device?" -c c1    # memory_search, answer with a citation
    python examples/agent_loop.py "How do I reset the device?" --dry-run  # the request, without a model

Any server speaking the chat-completions API with tool calls works (OpenAI, vLLM, llama.cpp, Ollama, LM Studio).
The endpoint is configured as for `ltm history distill`: LTM_CHAT_BASE_URL and LTM_CHAT_MODEL (or chat_base_url
and chat_model in the config file), the key from LTM_CHAT_API_KEY, else the embedding key (OPENAI_API_KEY).
The model sees the same tools `ltm tools` prints and `ltm mcp` serves; each user turn, tool call (with its
arguments, result and outcome) and answer is logged with `log_turn`, so a later session can ask
history_search what worked. Exit codes are ltm's: 4 for missing configuration, 6 when the chat endpoint cannot
be reached or answers with an error, 5 when the database is unavailable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ltm_cli import Memory
from ltm_cli.errors import ConfigError, classify
from ltm_cli.services.distill import ChatError
from ltm_cli.tools import Caller, call, definitions

if TYPE_CHECKING:
    from ltm_cli.config import Config

SYSTEM = """You are a helpful assistant with a long-term memory (the tools).
Follow your active settings: {settings}
When the user asks you to change how you behave (speed, voice, tone…), change the setting with settings_set.
Before answering from documentation or calling an API, use memory_search and cite the passage you used as
[source: <citation>]."""
CONFIGURE = ("any OpenAI-compatible endpoint, e.g. LTM_CHAT_BASE_URL=https://api.openai.com/v1 "
             "LTM_CHAT_MODEL=gpt-4o-mini LTM_CHAT_API_KEY=sk-…; --dry-run shows the request without a model")


def chat_endpoint(config: Config) -> tuple[str, str, str | None]:
    """(base URL, model, API key) from ltm's configuration; ConfigError (exit 4) naming what is missing."""
    missing = [name for name, value in (("LTM_CHAT_BASE_URL", config.chat_base_url),
                                        ("LTM_CHAT_MODEL", config.chat_model)) if not value]
    if missing:
        raise ConfigError(f"no chat model configured: set {' and '.join(missing)}", hint=CONFIGURE)
    if not config.chat_base_url.startswith(("http://", "https://")):
        raise ConfigError(f"LTM_CHAT_BASE_URL must start with http:// or https://, got {config.chat_base_url!r}",
                          hint=CONFIGURE)
    return config.chat_base_url, config.chat_model, config.chat_api_key or config.embedding_api_key


def chat(base_url: str, model: str, api_key: str | None, messages: list[dict], tools: list[dict],
         timeout: float = 120.0) -> dict[str, Any]:
    """One chat-completions request; the assistant message, or ChatError (exit 6) when the endpoint cannot be
    reached, answers with an HTTP error or answers with something that is not a chat completion."""
    import httpx

    where = f"chat model {model} at {base_url}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(f"{base_url.rstrip('/')}/chat/completions", headers=headers, timeout=timeout,
                              json={"model": model, "messages": messages, "tools": tools})
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ChatError(f"{where} could not be reached: {reason}",
                        hint="check LTM_CHAT_BASE_URL and the network, or try --dry-run") from None
    if response.status_code >= 400:
        hint = "set LTM_CHAT_API_KEY (or OPENAI_API_KEY)" if response.status_code in (401, 403) else None
        raise ChatError(f"{where} answered HTTP {response.status_code}: "
                        f"{' '.join(response.text.split())[:200]}", hint=hint)
    try:
        message = response.json()["choices"][0]["message"]
        for tool_call in message.get("tool_calls") or ():
            if not isinstance(tool_call["function"]["name"], str):
                raise TypeError("a tool call without a function name")
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise ChatError(f"{where} did not answer with a chat completion: {type(exc).__name__}: {exc}") from None
    return message


def request(memory: Memory, question: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages and tools the model is sent first."""
    messages = [{"role": "system", "content": SYSTEM.format(settings=json.dumps(memory.settings.export()))},
                {"role": "user", "content": question}]
    return messages, definitions("openai")


def run_tool(memory: Memory, tool_call: dict[str, Any], caller: Caller) -> tuple[Any, str, str, str | None]:
    """Run one tool call: (arguments to log, result for the model, outcome, outcome note).

    Whatever goes wrong in a tool (arguments that are not JSON, an unknown tool, an LtmError, or a bug that
    raises something else) goes back to the model as a failed result instead of ending the run: the model can
    correct itself, and the log keeps what did not work. The arguments are logged parsed; when they do not
    parse, the raw text is logged under `unparsed_arguments`, never passed off as the arguments themselves."""
    name, raw = tool_call["function"]["name"], tool_call["function"].get("arguments") or "{}"
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw  # some servers send an object
    except json.JSONDecodeError as exc:
        message = f"arguments are not JSON: {exc}"
        return {"unparsed_arguments": raw}, f"error: {message}", "failure", message
    try:
        return arguments, call(memory, name, arguments, caller).text, "success", None
    except Exception as exc:  # noqa: BLE001 - any tool failure is the model's to see, not the end of the run
        _, message = classify(exc)
        hint = getattr(exc, "hint", None)
        return arguments, f"error: {message}" + (f" (hint: {hint})" if hint else ""), "failure", message


def run(memory: Memory, question: str, *, base_url: str, model: str, api_key: str | None = None,
        conversation: str | None = None, max_steps: int = 8) -> tuple[str, str]:
    """Answer `question`, letting the model use the memory tools; returns (answer, conversation id).
    Raises ChatError when the chat endpoint fails; the question is then logged with outcome failure."""
    # The user's turn is logged before the model is asked, not once it answers: the tool calls in between
    # change things (a setting, a note) and are logged as they happen, after the request they serve. A run that
    # ends without an answer (endpoint unreachable or failing, the database gone, Ctrl-C) marks that turn
    # outcome=failure with the reason, so history_search and distill see a failed attempt, not a question that
    # looks still open. The step limit, which does answer, logs that answer as the failure instead.
    added = memory.history.add(question, role="user", conversation=conversation, new=conversation is None)
    try:
        answer = _answer(memory, question, base_url, model, api_key, added.conversation_id, max_steps)
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else classify(exc)[1]
        # Best effort: when the database is what failed, the error to report is the original one.
        with contextlib.suppress(Exception):
            memory.history.outcome(added.message_id, "failure", f"no answer: {reason}")
        raise
    return answer, added.conversation_id


def _answer(memory: Memory, question: str, base_url: str, model: str, api_key: str | None, conversation: str,
            max_steps: int) -> str:
    agent = Caller(name=f"agent_loop:{model}")
    messages, tools = request(memory, question)
    for _ in range(max_steps):
        reply = chat(base_url, model, api_key, messages, tools)
        messages.append(reply)
        if not reply.get("tool_calls"):
            answer = reply.get("content") or ""
            memory.history.add(answer, role="assistant", conversation=conversation)
            return answer
        for tool_call in reply["tool_calls"]:
            arguments, result, outcome, note = run_tool(memory, tool_call, agent)
            messages.append({"role": "tool", "tool_call_id": tool_call.get("id"), "content": result})
            memory.history.add(reply.get("content") or "", role="assistant", conversation=conversation,
                               tool=tool_call["function"]["name"], args=arguments, result=result, outcome=outcome,
                               note=note)
    answer = "I could not finish within the step limit."
    memory.history.add(answer, role="assistant", conversation=conversation, outcome="failure",
                       note=f"stopped after {max_steps} steps")
    return answer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--conversation", "-c", help="Continue this conversation (default: a new one).")
    parser.add_argument("--store", "-s", help="ltm store (default: LTM_STORE or default).")
    parser.add_argument("--dry-run", action="store_true",
                        help="Print the request the model would get (JSON); ask no model, log nothing.")
    parser.add_argument("--debug", action="store_true", help="Show the traceback of an error.")
    args = parser.parse_args(argv)
    try:
        with Memory.open(args.store) as memory:
            if args.dry_run:
                messages, tools = request(memory, args.question)
                print(json.dumps({"base_url": memory.config.chat_base_url, "model": memory.config.chat_model,
                                  "messages": messages, "tools": tools}, indent=2, ensure_ascii=False))
                return 0
            base_url, model, api_key = chat_endpoint(memory.config)
            answer, conversation = run(memory, args.question, base_url=base_url, model=model, api_key=api_key,
                                       conversation=args.conversation)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        code, message = classify(exc)
        print(f"error: {message}", file=sys.stderr)
        if getattr(exc, "hint", None):
            print(f"hint: {exc.hint}", file=sys.stderr)
        return code
    print(answer)
    print(f"(conversation {conversation})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
