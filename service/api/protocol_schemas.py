"""The bodies of the standard protocols (Open Inference Protocol v2, MLflow scoring), as named
schemas for the published OpenAPI document, so clients generated from it get real types.

They document; they do not parse. The routes read these bodies with their own wire-format code
(service/api/open_inference.py, mlflow_scoring.py) and the inference answers are written as
bytes, so no request on a hot path is validated by pydantic twice, and the bytes sent are the
ones those modules write. The small metadata and readiness answers are built from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, RootModel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from service.api.open_inference import NUMERIC_DATATYPES

NUMERIC_TYPES = ", ".join(NUMERIC_DATATYPES)


class ProtocolBody(BaseModel):
    """A protocol body's schema. A field that may be left out is documented as optional, not
    as nullable: the protocols' parsers refuse most nulls, so clients should omit the field."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core_schema))
        for field in schema.get("properties", {}).values():
            if "anyOf" in field and field.get("default", ...) is None:
                del field["default"]
                kept = [branch for branch in field.pop("anyOf") if branch != {"type": "null"}]
                if len(kept) > 1:
                    field["anyOf"] = kept
                elif "$ref" in kept[0]:
                    field.pop("title", None)
                    field.update(kept[0])
                else:
                    field.update(kept[0])
        return schema


class V2ServerMetadata(ProtocolBody):
    """`GET /v2`: the server's name, version and protocol extensions."""

    name: str
    version: str
    extensions: list[str]


class V2ServerLive(ProtocolBody):
    live: bool


class V2ServerReady(ProtocolBody):
    ready: bool


class V2TensorMetadata(ProtocolBody):
    """A model input's or output's name, datatype and shape (-1: any number of rows)."""

    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(ProtocolBody):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ModelReady(ProtocolBody):
    name: str
    ready: bool


class V2Parameters(ProtocolBody):
    """Protocol parameters: the binary tensor data extension's, and any others (ignored)."""

    model_config = ConfigDict(extra="allow")

    binary_data_size: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="On an input: its tensor travels as this many raw little-endian bytes "
        "after the JSON (Inference-Header-Content-Length says where the JSON ends). "
        "On an output: likewise, in the answer.",
    )
    binary_data: bool | None = Field(
        default=None, description="On a requested output: send it as bytes."
    )
    binary_data_output: bool | None = Field(
        default=None,
        description="On the request: send every output not named otherwise as bytes.",
    )


class V2RequestInput(ProtocolBody):
    name: str = Field(description="The model's one input is `inputs`.")
    shape: list[Annotated[int, Field(ge=0)]] = Field(description="[rows, features]")
    datatype: str = Field(description=f"One of {NUMERIC_TYPES}.")
    parameters: V2Parameters | None = None
    data: list[Any] | None = Field(
        default=None,
        description="The values, flat in row-major order or nested by rows; left out when "
        "`parameters.binary_data_size` says the bytes follow the JSON.",
    )


class V2RequestOutput(ProtocolBody):
    name: str = Field(description="`predictions`, or a classifier's `labels`, `probabilities`.")
    parameters: V2Parameters | None = None


class V2InferenceRequest(ProtocolBody):
    """`POST /v2/models/{id}/infer`: one input tensor `inputs` of shape [rows, features]."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {"name": "inputs", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
                    ]
                }
            ]
        }
    )

    id: str | None = Field(default=None, description="Echoed in the answer.")
    parameters: V2Parameters | None = None
    inputs: list[V2RequestInput] = Field(min_length=1)
    outputs: list[V2RequestOutput] | None = Field(
        default=None, description="The outputs wanted; all of them when left out."
    )


class V2ResponseOutput(ProtocolBody):
    name: str
    datatype: Literal["FP32", "INT64", "BYTES"]
    shape: list[int]
    parameters: V2Parameters | None = None
    data: list[Any] | None = Field(
        default=None,
        description="The values, flat in row-major order; left out when "
        "`parameters.binary_data_size` says the bytes follow the JSON.",
    )


class V2InferenceResponse(ProtocolBody):
    """Regression: `predictions` [rows, outputs]. Classification: `labels` [rows] (INT64, or
    BYTES for string labels) and `probabilities` [rows, classes]. All numbers FP32."""

    model_name: str
    model_version: str
    id: str
    outputs: list[V2ResponseOutput]


class MlflowDataframeSplit(ProtocolBody):
    """pandas' `split` orientation: column names and rows of values."""

    columns: list[str] | None = Field(
        default=None, description="Matched to the model's feature names when it has them."
    )
    data: list[list[Any]]


class MlflowSplitBody(ProtocolBody):
    model_config = ConfigDict(extra="forbid")

    dataframe_split: MlflowDataframeSplit
    params: dict[str, Any] | None = Field(default=None, description="Accepted and ignored.")


class MlflowRecordsBody(ProtocolBody):
    model_config = ConfigDict(extra="forbid")

    dataframe_records: list[dict[str, Any]] = Field(
        min_length=1,
        description="One object per row: {column: value}, all with one set of columns.",
    )
    params: dict[str, Any] | None = Field(default=None, description="Accepted and ignored.")


class MlflowInstancesBody(ProtocolBody):
    model_config = ConfigDict(extra="forbid")

    instances: list[Any] | dict[str, list[Any]] = Field(
        description="Rows (or one value per row for one feature), or {column: values}."
    )
    params: dict[str, Any] | None = Field(default=None, description="Accepted and ignored.")


class MlflowInputsBody(ProtocolBody):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] | dict[str, list[Any]] = Field(description="As `instances`.")
    params: dict[str, Any] | None = Field(default=None, description="Accepted and ignored.")


class MlflowScoringRequest(
    RootModel[MlflowSplitBody | MlflowRecordsBody | MlflowInstancesBody | MlflowInputsBody]
):
    """Rows to score, in exactly one of MLflow's four JSON forms."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"dataframe_split": {"columns": ["x1", "x2"], "data": [[1, 2]]}}]
        }
    )


class MlflowPredictions(ProtocolBody):
    """One value per row for a one-output regressor, rows for several outputs, labels for a
    classifier."""

    predictions: list[Any]
