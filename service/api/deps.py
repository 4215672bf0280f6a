"""Per-request dependencies, as Annotated aliases the routes declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.db import Database
from service.inference import PredictorCache


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_predictors(request: Request) -> PredictorCache:
    cache: PredictorCache = request.app.state.predictors
    return cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
PredictorsDep = Annotated[PredictorCache, Depends(get_predictors)]
