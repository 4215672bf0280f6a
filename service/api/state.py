"""What an API process holds for its requests: one typed object, set in one place (create_app
builds it; the lifespan opens the database and the predictor cache)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.api.auth import KeyRing
from service.api.micro_batch import MicroBatcher
from service.config import Settings
from service.inference import PredictLimits, PredictorCache
from service.storage.blobs import BlobStore, open_blob_store
from service.storage.db import Database


@dataclass
class ApiState:
    settings: Settings
    keys: KeyRing
    batcher: MicroBatcher
    limits: PredictLimits = field(init=False)
    # Opened by the lifespan, so nothing connects when the app is merely built.
    db: Database = field(init=False)
    blob_store: BlobStore = field(init=False)
    predictors: PredictorCache = field(init=False)

    def __post_init__(self) -> None:
        self.limits = PredictLimits.from_settings(self.settings)

    def open(self) -> None:
        # First: a blob store URL that cannot work stops the API before it opens anything.
        self.blob_store = open_blob_store(self.settings.blob_store_url)
        self.db = Database(self.settings.database_url)
        self.predictors = PredictorCache(
            self.db,
            self.settings.model_cache_size,
            self.settings.model_cache_bytes,
            self.blob_store,
        )
