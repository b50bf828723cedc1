"""OpenAPI 3.x and Swagger 2.0 (JSON or YAML, one file or many): an overview, per operation a card and details."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ltm_cli.loaders.base import LoadedDocument, LoadError, LoadOptions, Section
from ltm_cli.loaders.text import decode

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_DESCRIPTION = 1200
MAX_SCHEMA_DEPTH = 3
MAX_PROPERTIES = 40
MAX_SCHEMA_TEXT = 1500  # characters of one rendered body or response schema


def parse_document(text: str, name: str) -> Any:
    """JSON or YAML text as Python data; YAML aliases that would expand without bound are refused first."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on multi-MB specs
    try:
        if "*" in text:  # aliases: make sure they do not expand without bound before anything walks the tree
            _check_expansion(yaml.compose(text, Loader=loader), name)
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise LoadError(f"{name}: invalid YAML/JSON{where}") from exc


MAX_YAML_NODES = 2_000_000  # nodes a YAML document may expand to through its aliases (Stripe's spec: ~600k)


def _check_expansion(root: Any, name: str) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_NODES ("billion laughs": a few hundred bytes that
    expand to 10^9 nodes) or refer to themselves. Each node's expanded size is counted once (memoised), so
    the check is linear in the document's size."""
    if root is None:
        return
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise LoadError(f"{name}: a YAML alias refers to itself")
        value = node.value
        if isinstance(value, list):
            open_.add(key)
            total = 1
            for item in value:
                total += sum(size(part) for part in item) if isinstance(item, tuple) else size(item)
                if total > MAX_YAML_NODES:
                    raise LoadError(f"{name}: YAML aliases expand to more than {MAX_YAML_NODES:,} nodes "
                                    f"(a 'billion laughs' document?)")
            open_.discard(key)
        else:
            total = 1
        sizes[key] = total
        return total

    size(root)


class _Resolver:
    """Follows $refs within the spec and into other files relative to the referring file."""

    def __init__(self, root_path: Path, root: Any) -> None:
        self.docs: dict[Path, Any] = {root_path.resolve(): root}
        self.dangling: set[str] = set()

    def _doc(self, path: Path) -> Any:
        path = path.resolve()
        if path not in self.docs:
            try:
                self.docs[path] = parse_document(decode(path.read_bytes(), path), path.name)
            except (OSError, LoadError):
                self.docs[path] = None
        return self.docs[path]

    def resolve(self, node: Any, base: Path, seen: frozenset[str] = frozenset()) -> tuple[Any, Path, str | None]:
        """Dereference `node` if it is a $ref -> (target, file it lives in, ref name); dangling -> (None, …)."""
        hops = 0
        name = None
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and hops < 32:
            ref = node["$ref"]
            file_part, _, pointer = ref.partition("#")
            target_path = (base.parent / file_part) if file_part else base
            key = f"{target_path.resolve()}#{pointer}"
            if key in seen:
                return {"$cycle": ref}, base, ref
            seen = seen | {key}
            doc = self._doc(target_path)
            target = _pointer(doc, pointer) if doc is not None else None
            if target is None:
                self.dangling.add(ref if file_part else f"#{pointer}")
                return None, base, ref
            name = pointer.rsplit("/", 1)[-1] if pointer else Path(file_part).stem
            node, base = target, target_path
            hops += 1
        return node, base, name


    def check_all(self) -> None:
        """Visit every $ref in every file reachable from the entry, so every dangling one is reported."""
        pending = list(self.docs.items())
        visited: set[Path] = set()
        while pending:
            path, doc = pending.pop()
            if path in visited or doc is None:
                continue
            visited.add(path)
            stack = [doc]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    ref = node.get("$ref")
                    if isinstance(ref, str):
                        file_part, _, pointer = ref.partition("#")
                        target_path = ((path.parent / file_part) if file_part else path).resolve()
                        target_doc = self._doc(target_path)
                        if target_doc is None or _pointer(target_doc, pointer) is None:
                            self.dangling.add(ref if file_part else f"#{pointer}")
                        elif target_path not in visited:
                            pending.append((target_path, target_doc))
                    stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
                elif isinstance(node, list):
                    stack.extend(v for v in node if isinstance(v, (dict, list)))


def _pointer(doc: Any, pointer: str) -> Any:
    node = doc
    for part in [p for p in pointer.split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


_TAG = re.compile(r"<[^>]{1,200}>")


def _clip(text: Any, limit: int = MAX_DESCRIPTION) -> str:
    """One line, HTML tags dropped (Stripe writes descriptions in HTML), at most `limit` characters."""
    if not isinstance(text, str):
        return ""
    text = " ".join(_TAG.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


MAX_ENUM_CHARS = 600  # characters of an enum's values: Stripe's tax id types run to ~100 (`eu_vat`, `gb_vat`…)


def _enum_values(values: list) -> str:
    """An enum's values joined with `|`, as many as fit in MAX_ENUM_CHARS, then how many more there are. An LLM
    calling the API needs the valid values, and a question names one ("VAT number") more often than the field."""
    shown: list[str] = []
    used = 0
    for value in values:
        text = str(value)
        if shown and used + len(text) + 1 > MAX_ENUM_CHARS:
            break
        shown.append(text)
        used += len(text) + 1
    more = len(values) - len(shown)
    return "|".join(shown) + (f"|…{more} more" if more else "")


class _Renderer:
    def __init__(self, resolver: _Resolver) -> None:
        self.r = resolver

    def schema(self, node: Any, base: Path, depth: int = 0, seen: frozenset[str] = frozenset()) -> str:
        """A compact, readable one-line form: `{id: string, amount*: integer, items: [Item{...}]}`."""
        node, base, name = self.r.resolve(node, base)
        if node is None:
            return f"{name or '?'} (unresolved $ref)"
        if not isinstance(node, dict):
            return "any"
        if "$cycle" in node or (name and name in seen):
            return name or "…"
        seen = seen | ({name} if name else set())
        for combiner in ("allOf", "oneOf", "anyOf"):
            if isinstance(node.get(combiner), list):
                joiner = " & " if combiner == "allOf" else " | "
                parts = [self.schema(s, base, depth, seen) for s in node[combiner][:6]]
                return (f"{name}: " if name and depth else "") + joiner.join(parts)
        kind = node.get("type")
        if isinstance(kind, list):
            kind = "|".join(str(k) for k in kind)
        if kind == "array" or "items" in node:
            return f"[{self.schema(node.get('items', {}), base, depth + 1, seen)}]"
        props = node.get("properties")
        if isinstance(props, dict) and props:
            if depth >= MAX_SCHEMA_DEPTH:
                return f"{name or 'object'}{{…}}"
            required = set(node.get("required") or [])
            fields = []
            for key, value in list(props.items())[:MAX_PROPERTIES]:
                mark = "*" if key in required else ""
                fields.append(f"{key}{mark}: {self.schema(value, base, depth + 1, seen)}")
            more = f", …{len(props) - MAX_PROPERTIES} more" if len(props) > MAX_PROPERTIES else ""
            return f"{name or ''}{{{', '.join(fields)}{more}}}"
        if "enum" in node and isinstance(node["enum"], list):
            return f"{kind or 'enum'}({_enum_values(node['enum'])})"
        fmt = f"<{node['format']}>" if isinstance(node.get("format"), str) else ""
        return f"{kind or name or 'object'}{fmt}"

    def response_shape(self, node: Any, base: Path, depth: int = 0) -> str:
        """A response by its schema's name (`payment_method`, `[ContainerSummary]`), an unnamed one by its field
        names (`{droplet, links}`). Expanded in full, the returned resource (every call on a payment method
        returns the whole payment method) and the shared error object filled most chunks of an operation with
        text that says nothing about which call it is, and ranked those calls for the resource's field names."""
        node, base, name = self.r.resolve(node, base)
        if name or not isinstance(node, dict) or depth > 2:
            return name or "object"
        for combiner in ("allOf", "oneOf", "anyOf"):
            if isinstance(node.get(combiner), list):
                return " | ".join(self.response_shape(s, base, depth + 1) for s in node[combiner][:6])
        if node.get("type") == "array" or "items" in node:
            return f"[{self.response_shape(node.get('items', {}), base, depth + 1)}]"
        props = node.get("properties")
        if isinstance(props, dict) and props:
            more = f", …{len(props) - MAX_PROPERTIES} more" if len(props) > MAX_PROPERTIES else ""
            return f"{{{', '.join(str(key) for key in list(props)[:MAX_PROPERTIES])}{more}}}"
        kind = node.get("type")
        return "|".join(str(k) for k in kind) if isinstance(kind, list) else str(kind or "object")

    def parameter(self, param: Any, base: Path) -> str | None:
        param, pbase, _ = self.r.resolve(param, base)
        if not isinstance(param, dict) or "name" not in param:
            return None
        where = param.get("in", "?")
        if where == "body":  # Swagger 2.0
            return None
        kind = self.schema(param.get("schema", {"type": param.get("type", "string")}), pbase, 2)
        required = ", required" if param.get("required") else ""
        desc = _clip(param.get("description"), 200)
        return f"- {param['name']} ({where}{required}, {kind}){': ' + desc if desc else ''}"


def _operations(spec: dict, resolver: _Resolver, entry: Path) -> list[tuple[str, str, dict, Path, list]]:
    found = []
    for section_name in ("paths", "webhooks"):
        section = spec.get(section_name)
        if not isinstance(section, dict):
            continue
        for path, item in section.items():
            item, base, _ = resolver.resolve(item, entry)
            if not isinstance(item, dict):
                continue
            shared = item.get("parameters") or []
            for method in METHODS:
                if method not in item:
                    continue
                op, op_base, _ = resolver.resolve(item[method], base)
                if isinstance(op, dict):
                    label = path if section_name == "paths" else f"webhook {path}"
                    found.append((method.upper(), label, op, op_base, shared))
    return found


_WORD_BREAK = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z]{2})")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
_MARKDOWN = re.compile(r"\[([^\]]{1,200})\]\([^)]{0,300}\)|\*\*|`")  # [text](link) -> text; bold, code marks
_VERSION = re.compile(r"v\d+")
HEADING_CHARS = 200  # chunking.MAX_HEADING_CHARS: what the chunker keeps of a heading
MAX_IDENTITY_WORDS = 80  # characters of operationId and path words in a heading


def _words(identifier: str) -> list[str]:
    """`PostPaymentMethodsPaymentMethodAttach`, `sshKeys_list`, `/v1/payment_methods/{id}` -> lower-case words."""
    return [w.lower() for w in _WORD_BREAK.split(identifier) if w]


def _identity(method: str, path: str, summary: str, description: str, op_id: Any) -> str:
    """What names an operation on every one of its chunks: `METHOD /path — gist · words`.

    The gist is the summary, else the description's first sentence (Stripe has no summaries). The words spell
    out the operationId and the path, which the full-text parser keeps as single tokens
    (`/v1/payment_methods`, `PostPaymentMethodsPaymentMethodAttach`) that no question ever matches."""
    head = f"{method} {path}"
    gist = _MARKDOWN.sub(r"\1", summary or (_SENTENCE.split(description, 1)[0] if description else ""))
    words = list(dict.fromkeys(w for w in _words(op_id if isinstance(op_id, str) else "") + _words(path)
                               if w != method.lower() and not _VERSION.fullmatch(w)))
    room = HEADING_CHARS - len(head) - min(len(" ".join(words)), MAX_IDENTITY_WORDS) - 6
    gist = _clip(gist, room) if room > 20 else ""
    seen = set(re.findall(r"[a-z0-9]+", gist.lower()))  # as the parser sees it: `PaymentMethod` is one word
    tail = _clip(" ".join(w for w in words if w not in seen), MAX_IDENTITY_WORDS).rstrip("…").strip()
    if gist:
        head += f" — {gist}"
    if tail:
        head += f" · {tail}"
    return head[:HEADING_CHARS]


# An operation's card: what names it and says what it does, in one short chunk that both retrievers see first.
# Shorter cards ranked better (bench/api_questions.py, all five specs: a 250-character description against 500
# and 600): BM25 scores a short text that holds the question's words higher, and the card's vector stays on the
# operation's purpose. The rest of the description, the parameters' descriptions and the schemas follow in the
# operation's further chunks, which search lists under the operation once.
CARD_DESCRIPTION = 250  # characters of the description on a card, cut at a sentence end
CARD_NAMES = 300  # characters of parameter and body field names on a card


def _cut(text: str, limit: int) -> tuple[str, str]:
    """`text` split at the last sentence end within `limit` characters (else at a word): (head, rest)."""
    if len(text) <= limit:
        return text, ""
    cut = max((m.start() for m in _SENTENCE.finditer(text) if m.start() <= limit), default=0)
    if cut < limit // 3:
        cut = text.rfind(" ", 0, limit)
    cut = cut if cut > 0 else limit
    return text[:cut].rstrip(), text[cut:].lstrip()


def _names_line(names: list[str], limit: int = CARD_NAMES) -> str:
    """As many names as fit in `limit` characters, then how many more there are: a card must stay one chunk."""
    shown: list[str] = []
    for name in names:
        if shown and len(", ".join([*shown, name])) > limit:
            break
        shown.append(name)
    more = len(names) - len(shown)
    return ", ".join(shown) + (f", …{more} more" if more else "")


def _body_schema(r: _Renderer, op: dict, base: Path, swagger2: bool) -> tuple[str | None, Any, Path]:
    """(media type, schema, the file it lives in) of the request body; (None, None, base) without one."""
    if swagger2:
        for param in op.get("parameters") or []:
            param, pbase, _ = r.r.resolve(param, base)
            if isinstance(param, dict) and param.get("in") == "body":
                return None, param.get("schema", {}), pbase
        return None, None, base
    request, rbase, _ = r.r.resolve(op.get("requestBody"), base)
    if isinstance(request, dict):
        for media, media_obj in list((request.get("content") or {}).items())[:1]:
            schema = media_obj.get("schema") if isinstance(media_obj, dict) else None
            return media, schema or {}, rbase
    return None, None, base


def _field_names(r: _Renderer, schema: Any, base: Path, depth: int = 0) -> list[str]:
    """A request body's top-level field names (through allOf/oneOf/anyOf): what Stripe and others call the
    operation's parameters."""
    node, nbase, _ = r.r.resolve(schema, base)
    if not isinstance(node, dict) or depth > MAX_SCHEMA_DEPTH:
        return []
    names = [str(n) for n in node["properties"]] if isinstance(node.get("properties"), dict) else []
    for combiner in ("allOf", "oneOf", "anyOf"):
        if isinstance(node.get(combiner), list):
            for part in node[combiner][:6]:
                names += _field_names(r, part, nbase, depth + 1)
    return names


def _responses(r: _Renderer, op: dict, base: Path, swagger2: bool) -> list[str]:
    out = []
    for status, response in list((op.get("responses") or {}).items())[:8]:
        response, resp_base, _ = r.r.resolve(response, base)
        if not isinstance(response, dict):
            continue
        line = f"- {status}: {_clip(response.get('description'), 200)}"
        schema = response.get("schema") if swagger2 else next(
            (m.get("schema") for m in (response.get("content") or {}).values() if isinstance(m, dict)), None)
        if schema:
            line += f" → {_clip(r.response_shape(schema, resp_base), MAX_SCHEMA_TEXT)}"
        out.append(line)
    return out


def _render_operation(r: _Renderer, method: str, path: str, op: dict, base: Path, shared: list,
                      swagger2: bool) -> list[Section]:
    """An operation as its card, then its details (rest of the description, parameters, body, responses) in a
    second section under the same heading and location."""
    summary = _clip(op.get("summary"), 200)
    op_id = op.get("operationId")
    card = [f"{method} {path}" + (f" — {summary}" if summary else "")]
    if op_id:
        card.append(f"Operation: {op_id}")
    if op.get("tags"):
        card.append(f"Tags: {', '.join(str(t) for t in op['tags'])}")
    if op.get("deprecated"):
        card.append("Deprecated.")
    description = _clip(op.get("description"))
    gist, rest = _cut(description, CARD_DESCRIPTION)
    if gist and gist != summary:
        card.append(gist)
    declared = [r.r.resolve(p, base)[0] for p in [*shared, *(op.get("parameters") or [])]]
    media, body, body_base = _body_schema(r, op, base, swagger2)
    names = [p["name"] for p in declared if isinstance(p, dict) and isinstance(p.get("name"), str)
             and p.get("in") != "body"]
    names += _field_names(r, body, body_base) if body is not None else []
    if names:
        card.append("Parameters: " + _names_line(list(dict.fromkeys(names))))
    details = [rest] if rest else []
    params = [p for p in (r.parameter(x, base) for x in [*shared, *(op.get("parameters") or [])]) if p]
    if params:
        details.append("Parameters:\n" + "\n".join(params))
    if body is not None:
        label = f"Request body ({media})" if media else "Request body"
        details.append(f"{label}: {_clip(r.schema(body, body_base), MAX_SCHEMA_TEXT)}")
    responses = _responses(r, op, base, swagger2)
    if responses:
        details.append("Responses:\n" + "\n".join(responses))
    location = {"method": method, "path": path}
    if op_id:
        location["operation_id"] = op_id
    heading = _identity(method, path, summary, description, op_id)
    sections = [Section(["\n".join(card)], heading=heading, location=location, atomic=True)]
    if details:
        sections.append(Section(details, heading=heading, location=location, atomic=True))
    return sections


def load_openapi(path: Path, data: bytes, options: LoadOptions) -> LoadedDocument:
    spec = parse_document(decode(data, path), path.name)
    if not isinstance(spec, dict) or not ({"openapi", "swagger"} & set(spec)):
        raise LoadError("not an OpenAPI or Swagger document (no 'openapi' or 'swagger' key)")
    swagger2 = "swagger" in spec
    resolver = _Resolver(path, spec)
    renderer = _Renderer(resolver)
    info, info_base, _ = resolver.resolve(spec.get("info") or {}, path)
    info = info if isinstance(info, dict) else {}
    title = _clip(info.get("title"), 200) or path.stem
    version = spec.get("openapi") or spec.get("swagger")

    overview = [f"{title} (API version {info.get('version', '?')}, {'Swagger' if swagger2 else 'OpenAPI'} {version})"]
    description, _, _ = resolver.resolve(info.get("description"), info_base)
    if _clip(description):
        overview.append(_clip(description, 3000))
    servers = [s.get("url") for s in spec.get("servers") or [] if isinstance(s, dict) and s.get("url")]
    if swagger2 and spec.get("host"):
        servers.append(f"{(spec.get('schemes') or ['https'])[0]}://{spec['host']}{spec.get('basePath', '')}")
    if servers:
        overview.append("Servers: " + ", ".join(str(s) for s in servers[:5]))
    tags = [t.get("name") for t in spec.get("tags") or [] if isinstance(t, dict) and t.get("name")]
    if tags:
        overview.append("Tags: " + ", ".join(str(t) for t in tags[:80]))

    operations = _operations(spec, resolver, path)
    resolver.check_all()
    sections = [Section(overview, heading=f"{title} — overview", location={"section": "overview"})]
    for m, p, op, b, shared in operations:
        sections += _render_operation(renderer, m, p, op, b, shared, swagger2)
    notices = []
    if resolver.dangling:
        shown = sorted(resolver.dangling)
        notices.append(f"{len(shown)} unresolved $ref(s), kept as names: {', '.join(shown[:5])}"
                       + (" …" if len(shown) > 5 else ""))
    metadata = {"openapi_version": str(version), "api_version": str(info.get("version", "")),
                "operations": len(operations), "files": len(resolver.docs)}
    if resolver.dangling:
        metadata["unresolved_refs"] = sorted(resolver.dangling)
    return LoadedDocument("application/vnd.oai.openapi", title, sections, metadata=metadata, notices=notices)
