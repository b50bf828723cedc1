"""Finding the right API operation: every chunk names its operation, and an operation ranks once, as a unit.

The spec below reproduces what made "attach a payment method to a customer" rank the update and retrieve calls
first on Stripe's spec: descriptions in HTML-free prose that name other operations' words, no summaries, one long
operation split over several chunks, and a large resource every call returns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltm_cli import Memory
from ltm_cli.chunking import chunk_sections
from ltm_cli.embedders.hashing import HashEmbedder
from ltm_cli.loaders.base import LoadOptions
from ltm_cli.loaders.openapi import load_openapi
from ltm_cli.services.search import first_per_group

LOCAL_MAX_TOKENS = 254  # what the default local model takes: long operations are split as they are in real use
ATTACH = ("POST", "/v1/payment_methods/{payment_method}/attach")

_ATTACH_DESCRIPTION = " ".join([
    "Attaches a PaymentMethod object to a Customer.",
    "To attach a new PaymentMethod to a Customer for future payments, we recommend a SetupIntent or a",
    "PaymentIntent with setup_future_usage instead.",
    "These approaches perform any necessary steps to set up the PaymentMethod for future payments.",
    "Using this endpoint without first using a SetupIntent or PaymentIntent does not optimize the PaymentMethod",
    "for future use, which makes later declines and payment friction more likely.",
    "See Optimizing cards for future payments for more information about setting up future payments.",
    "To use this PaymentMethod as the default for invoice or subscription payments, set",
    "invoice_settings.default_payment_method on the Customer to the PaymentMethod's ID.",
    "Card details are checked with the card network, which may place a temporary authorization on the card",
    "that is released within a few days, depending on the issuing bank and the card brand.",
    "Bank debits need a mandate before they can be charged, which the SetupIntent collects from the account",
    "holder together with the billing details the bank requires in the country of the account.",
])


def _form(*fields: str) -> dict:
    return {"content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": {f: {"type": "string"} for f in fields}}}}}


def _returns(schema: str) -> dict:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"200": {"description": "Successful response.", "content": {"application/json": {"schema": ref}}},
            "default": {"description": "Error response.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/error"}}}}}


def _op(op_id: str, description: str, *, body: dict | None = None, returns: str = "payment_method") -> dict:
    op = {"operationId": op_id, "description": description, "responses": _returns(returns)}
    if body:
        op["requestBody"] = body
    return op


PATH_PARAM = [{"name": "payment_method", "in": "path", "required": True, "schema": {"type": "string"}}]
SPEC = {
    "openapi": "3.0.0",
    "info": {"title": "Payments", "version": "2023-08-16"},
    "paths": {
        "/v1/payment_methods/{payment_method}": {
            "parameters": PATH_PARAM,
            "get": _op("GetPaymentMethodsPaymentMethod",
                       "Retrieves a PaymentMethod object attached to the account. To retrieve a payment method "
                       "attached to a customer, use the customer's payment methods endpoint."),
            "post": _op("PostPaymentMethodsPaymentMethod",
                        "Updates a PaymentMethod object. A payment method must be attached to a customer to be "
                        "updated.", body=_form("billing_details", "metadata", "card")),
        },
        "/v1/payment_methods/{payment_method}/attach": {
            "parameters": PATH_PARAM,
            "post": _op("PostPaymentMethodsPaymentMethodAttach", _ATTACH_DESCRIPTION,
                        body=_form("customer", "expand")),
        },
        "/v1/payment_methods/{payment_method}/detach": {
            "parameters": PATH_PARAM,
            "post": _op("PostPaymentMethodsPaymentMethodDetach",
                        "Detaches a PaymentMethod object from a Customer. Once detached, it can no longer be used "
                        "for a payment or re-attached to a customer."),
        },
        "/v1/customers": {"post": _op("PostCustomers", "Creates a new customer object.",
                                      body=_form("email", "name", "payment_method"), returns="customer")},
        "/v1/customers/{customer}": {
            "parameters": [{"name": "customer", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _op("GetCustomersCustomer", "Retrieves a Customer object.", returns="customer"),
            "post": _op("PostCustomersCustomer", "Updates the specified customer by setting the values of the "
                        "parameters passed.", body=_form("email", "name", "invoice_settings"), returns="customer"),
        },
        "/v1/setup_intents": {"post": _op(
            "PostSetupIntents", "Creates a SetupIntent object. After the SetupIntent is created, attach a payment "
            "method and confirm it to collect any permissions needed to charge the payment method later.",
            body=_form("customer", "payment_method", "usage"), returns="setup_intent")},
        "/v1/payment_intents": {"post": _op(
            "PostPaymentIntents", "Creates a PaymentIntent object. After the PaymentIntent is created, attach a "
            "payment method and confirm to continue the payment.", body=_form("amount", "currency", "customer"),
            returns="payment_intent")},
        "/v1/refunds": {"post": _op("PostRefunds", "Create a refund.", body=_form("charge", "amount"),
                                    returns="refund")},
        "/v1/customers/{customer}/payment_methods": {
            "get": {**_op("GetCustomersCustomerPaymentMethods", "Returns a list of PaymentMethods for a given "
                          "Customer.", returns="payment_method_list"),
                    "parameters": [{"name": "customer", "in": "path", "required": True,
                                    "schema": {"type": "string"}}]},
        },
    },
    "components": {"schemas": {
        "payment_method": {"type": "object", "required": ["id", "type"], "properties": {
            **{name: {"type": "string", "description": f"The payment method's {name.replace('_', ' ')}, "
                      "as attached to the customer."}
               for name in ("id", "type", "customer", "billing_details", "card", "created", "livemode",
                            "metadata", "sepa_debit", "us_bank_account", "link", "paypal")}}},
        **{name: {"type": "object", "properties": {"id": {"type": "string"}, "customer": {"type": "string"},
                                                   "payment_method": {"type": "string"}}}
           for name in ("customer", "setup_intent", "payment_intent", "refund")},
        "payment_method_list": {"type": "object", "properties": {
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/payment_method"}},
            "has_more": {"type": "boolean"}}},
        "error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "payment_method": {"type": "string"},
            "customer": {"type": "string"}}}}},
    }},
}


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "payments.json"
    path.write_text(json.dumps(SPEC), encoding="utf-8")
    return path


@pytest.fixture
def memory(store: str, spec_file: Path):
    small = HashEmbedder(384)
    small.max_tokens = LOCAL_MAX_TOKENS
    with Memory.open(embedder=small) as mem:
        assert not mem.docs.ingest([str(spec_file)]).failed
        yield mem


def _chunks(spec_file: Path):
    loaded = load_openapi(spec_file, spec_file.read_bytes(), LoadOptions())
    return chunk_sections(loaded.sections, target=200, overlap=32, max_tokens=LOCAL_MAX_TOKENS)


def _operation(hit) -> tuple[str, str]:
    return hit.location.get("method"), hit.location.get("path")


def test_every_chunk_of_a_split_operation_carries_method_and_path_in_its_heading(spec_file):
    attach = [c for c in _chunks(spec_file) if (c.location.get("method"), c.location.get("path")) == ATTACH]
    assert len(attach) >= 2  # the operation really is split
    for chunk in attach:
        assert chunk.heading.startswith("POST /v1/payment_methods/{payment_method}/attach — ")
        assert chunk.heading.endswith("· payment methods method attach")  # the operationId and path as words


def test_an_operation_without_a_summary_is_named_by_its_first_sentence(spec_file):
    headings = {(c.location.get("method"), c.location.get("path")): c.heading for c in _chunks(spec_file)}
    assert "— Attaches a PaymentMethod object to a Customer. ·" in headings[ATTACH]


def test_responses_name_their_schema_instead_of_repeating_it(spec_file):
    text = "\n".join(c.text for c in _chunks(spec_file) if c.location.get("path") == ATTACH[1])
    assert "- 200: Successful response. → payment_method\n" in text
    assert "- default: Error response. → error" in text
    assert "us_bank_account" not in text  # the resource's fields live with the resource, not in every call


def test_the_question_finds_its_operation_first(memory):
    hits = memory.search("attach a payment method to a customer", mode="keyword")
    assert _operation(hits[0]) == ATTACH


def test_each_operation_is_listed_once_at_its_best_chunk(memory):
    hits = memory.search("billing details of a payment method attached to a customer", mode="keyword", limit=10)
    operations = [_operation(h) for h in hits if "method" in h.location]
    assert len(operations) >= 3
    assert len(operations) == len(set(operations))


def test_first_per_group_keeps_each_groups_best_row_and_every_ungrouped_row():
    fused = [(("docs", i), 1.0 - i / 10, {}) for i in range(6)]
    group = {("docs", 0): "a", ("docs", 1): "a", ("docs", 3): "b", ("docs", 4): "a"}
    assert [key[1] for key, _, _ in first_per_group(fused, group)] == [0, 2, 3, 5]


def _operation_chunks(spec_file: Path, operation: tuple[str, str]):
    return sorted((c for c in _chunks(spec_file) if (c.location.get("method"), c.location.get("path")) == operation),
                  key=lambda c: c.ordinal)


def test_an_operations_first_chunk_is_its_card_with_identity_description_and_parameter_names(spec_file):
    card = _operation_chunks(spec_file, ATTACH)[0]
    assert card.text.startswith("POST /v1/payment_methods/{payment_method}/attach\n")
    assert "Operation: PostPaymentMethodsPaymentMethodAttach" in card.text
    assert "Attaches a PaymentMethod object to a Customer." in card.text
    assert "Parameters: payment_method, customer, expand" in card.text  # path parameters and body fields by name
    assert "Request body" not in card.text and "Responses:" not in card.text  # schema detail does not dilute it


def test_schema_detail_follows_in_the_operations_own_chunks_under_the_same_identity(spec_file):
    card, *details = _operation_chunks(spec_file, ATTACH)
    assert details
    assert {c.heading for c in details} == {card.heading}
    assert [c.ordinal for c in details] == list(range(card.ordinal + 1, card.ordinal + 1 + len(details)))
    rest = "\n".join(c.text for c in details)
    assert "Request body (application/x-www-form-urlencoded): {customer: string, expand: string}" in rest
    assert "- 200: Successful response. → payment_method" in rest
    assert "on the Customer to the PaymentMethod's ID." in rest  # the description's end, past what the card holds


def test_a_card_stays_one_chunk_however_many_fields_the_body_has(tmp_path):
    fields = [f"option_number_{i}_with_a_long_name" for i in range(300)]
    spec = {"openapi": "3.0.0", "info": {"title": "Wide", "version": "1"}, "paths": {"/v1/things": {
        "post": _op("PostThings", _ATTACH_DESCRIPTION, body=_form(*fields), returns="payment_method")}},
        "components": SPEC["components"]}
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    chunks = _operation_chunks(path, ("POST", "/v1/things"))
    card = chunks[0]
    assert "Operation: PostThings" in card.text and "option_number_0_with_a_long_name" in card.text
    assert card.text.rstrip().endswith("more")  # the names that did not fit are counted, not listed
    assert "Operation: PostThings" not in "\n".join(c.text for c in chunks[1:])


def test_an_enum_lists_every_value_that_fits_and_counts_the_rest(tmp_path):
    """Stripe's tax id `type` has ~100 values; cut at twelve, `eu_vat` was gone, and with it both the value an LLM
    must send and the word a question uses ("store a customer's VAT number")."""
    values = [f"code_{i:03d}" for i in range(200)]
    spec = {"openapi": "3.0.0", "info": {"title": "Tax", "version": "1"}, "paths": {"/v1/tax_ids": {"post": {
        "operationId": "PostTaxIds", "description": "Creates a tax id.", "responses": {"200": {"description": "OK"}},
        "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
            "type": {"type": "string", "enum": values}}}}}}}}}}
    path = tmp_path / "tax.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    details = "\n".join(c.text for c in _operation_chunks(path, ("POST", "/v1/tax_ids"))[1:])
    listed = details.split("string(", 1)[1].split(")", 1)[0].split("|")
    assert listed[:3] == ["code_000", "code_001", "code_002"] and len(listed) > 12
    assert listed[-1] == f"…{200 - (len(listed) - 1)} more"  # what did not fit is counted, not dropped silently
    assert len("|".join(listed[:-1])) <= 600
