"""Dashboard sign-in body and the session it opens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=512, description="The admin credential.")


class SessionView(BaseModel):
    actor: str
    expires_at: datetime
    csrf_token: str = Field(description="Send as X-CSRF-Token on every state-changing request.")
