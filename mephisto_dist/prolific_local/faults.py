"""Prolific's error answers: ``{"error": {"status", "error_code", "title", "detail", ...}}``."""

from __future__ import annotations

from typing import Any

# Prolific's error codes are its own numbers; these are the families it uses (4xx by status).
ERROR_CODES = {400: 140100, 401: 140200, 403: 140300, 404: 140400, 405: 140500}


class ProlificFault(Exception):
    """A request Prolific refuses: the HTTP status and what it says."""

    def __init__(self, status: int, detail: str | dict[str, Any], title: str | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.title = title or {400: "Invalid request", 401: "Authentication failed", 403: "Forbidden",
                               404: "Not found", 405: "Method not allowed"}.get(status, "Error")

    def body(self) -> dict[str, Any]:
        code = ERROR_CODES.get(self.status, 140000)
        return {"error": {"status": self.status, "error_code": code, "title": self.title, "detail": self.detail,
                          "additional_information": f"/api/v1/errors/{code}", "traceback": None,
                          "interactive": False}}


def not_found(kind: str, object_id: str) -> ProlificFault:
    return ProlificFault(404, f"{kind} {object_id} was not found", "Not found")


def invalid(field: str, message: str) -> ProlificFault:
    return ProlificFault(400, {field: [message]})
