"""An agent with long-term memory: any OpenAI-compatible chat endpoint, ltm's tools, and every turn logged.

    export LTM_CHAT_BASE_URL=https://api.openai.com/v1 LTM_CHAT_MODEL=gpt-4o-mini OPENAI_API_KEY=sk-...
    ltm ingest manual.pdf
    python examples/agent_loop.py "Please speak a bit faster"          # the model calls settings_set
    python examples/agent_loop.py "How do I reset the device?" -c c1    # memory_search, answer with a citation

Any server speaking the chat-completions API with tool calls works (OpenAI, vLLM, llama.cpp, Ollama, LM Studio).
The model sees the same tools `ltm tools` prints and `ltm mcp` serves; each user turn, tool call (with its
arguments, result and outcome) and answer is logged with `log_turn`, so a later session can ask
history_search what worked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ltm_cli import Memory
from ltm_cli.errors import LtmError
from ltm_cli.tools import Caller, call, definitions

SYSTEM = """You are a helpful assistant with a long-term memory (the tools).
Follow your active settings: {settings}
When the user asks you to change how you behave (speed, voice, tone…), change the setting with settings_set.
Before answering from documentation or calling an API, use memory_search and cite the passage you used as
[source: <citation>]."""


def chat(base_url: str, model: str, api_key: str | None, messages: list[dict], tools: list[dict],
         timeout: float = 120.0) -> dict[str, Any]:
    """One chat-completions request; returns the assistant message."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.post(f"{base_url.rstrip('/')}/chat/completions", headers=headers, timeout=timeout,
                          json={"model": model, "messages": messages, "tools": tools})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]


def run(memory: Memory, question: str, *, base_url: str, model: str, api_key: str | None = None,
        conversation: str | None = None, max_steps: int = 8) -> tuple[str, str]:
    """Answer `question`, letting the model use the memory tools; returns (answer, conversation id)."""
    agent = Caller(name=f"agent_loop:{model}")
    tools = definitions("openai")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM.format(settings=json.dumps(memory.settings.export()))},
        {"role": "user", "content": question}]
    added = memory.history.add(question, role="user", conversation=conversation, new=conversation is None)
    conversation = added.conversation_id
    for _ in range(max_steps):
        reply = chat(base_url, model, api_key, messages, tools)
        messages.append(reply)
        if not reply.get("tool_calls"):
            answer = reply.get("content") or ""
            memory.history.add(answer, role="assistant", conversation=conversation)
            return answer, conversation
        for tool_call in reply["tool_calls"]:
            name = tool_call["function"]["name"]
            try:
                arguments = json.loads(tool_call["function"].get("arguments") or "{}")
                result, outcome, note = call(memory, name, arguments, agent).text, "success", None
            except (LtmError, json.JSONDecodeError) as exc:
                arguments = tool_call["function"].get("arguments")
                message = exc.message if isinstance(exc, LtmError) else f"arguments are not JSON: {exc}"
                result, outcome, note = f"error: {message}", "failure", message
            messages.append({"role": "tool", "tool_call_id": tool_call["id"], "content": result})
            memory.history.add(reply.get("content") or "", role="assistant", conversation=conversation, tool=name,
                               args=arguments, result=result, outcome=outcome, note=note)
    answer = "I could not finish within the step limit."
    memory.history.add(answer, role="assistant", conversation=conversation, outcome="failure",
                       note=f"stopped after {max_steps} steps")
    return answer, conversation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--conversation", "-c", help="Continue this conversation (default: a new one).")
    parser.add_argument("--store", "-s", help="ltm store (default: LTM_STORE or default).")
    args = parser.parse_args()
    base_url = os.environ.get("LTM_CHAT_BASE_URL", "https://api.openai.com/v1")
    model = os.environ.get("LTM_CHAT_MODEL", "gpt-4o-mini")
    api_key = os.environ.get("LTM_CHAT_API_KEY") or os.environ.get("OPENAI_API_KEY")
    with Memory.open(args.store) as memory:
        answer, conversation = run(memory, args.question, base_url=base_url, model=model, api_key=api_key,
                                   conversation=args.conversation)
    print(answer)
    print(f"(conversation {conversation})", file=sys.stderr)


if __name__ == "__main__":
    main()
