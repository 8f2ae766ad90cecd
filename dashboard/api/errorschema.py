"""The error answers every API operation may give, added to the OpenAPI schema (a
drf-spectacular post-processing hook), so the schema says all that clients can receive:
401, 403 and 429 (throttled, or too many failed tokens from the address) everywhere, 404 where
a path names an object, 400 where input is validated."""

from __future__ import annotations

ERROR_BODY = {
    "type": "object",
    "description": "`detail` for authentication and lookup errors; the field names with their messages for invalid input.",
    "additionalProperties": True,
}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_BODY}}}


def document_error_answers(result: dict, generator, request, public) -> dict:
    for path, operations in result.get("paths", {}).items():
        for _method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.setdefault("401", _error("No valid token or session."))
            responses.setdefault("403", _error("Not staff, or without the permission the operation needs."))
            responses.setdefault(
                "429", _error("Too many requests, or too many failed tokens from this address (see Retry-After).")
            )
            if "{" in path:
                responses.setdefault("404", _error("No such object."))
            takes_input = "requestBody" in operation or any(
                parameter.get("in") == "query" for parameter in operation.get("parameters", [])
            )
            if takes_input:
                responses.setdefault("400", _error("Invalid input."))
    return result
