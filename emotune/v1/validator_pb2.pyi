from emotune.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValidationSpec(_message.Message):
    __slots__ = ("dataset_artifact", "styles_yaml", "embedder", "similarity_threshold", "dedup_threshold", "output_prefix", "off_style_margin", "keep_per_question")
    DATASET_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    STYLES_YAML_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DEDUP_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    OFF_STYLE_MARGIN_FIELD_NUMBER: _ClassVar[int]
    KEEP_PER_QUESTION_FIELD_NUMBER: _ClassVar[int]
    dataset_artifact: str
    styles_yaml: str
    embedder: str
    similarity_threshold: float
    dedup_threshold: float
    output_prefix: str
    off_style_margin: float
    keep_per_question: int
    def __init__(self, dataset_artifact: _Optional[str] = ..., styles_yaml: _Optional[str] = ..., embedder: _Optional[str] = ..., similarity_threshold: _Optional[float] = ..., dedup_threshold: _Optional[float] = ..., output_prefix: _Optional[str] = ..., off_style_margin: _Optional[float] = ..., keep_per_question: _Optional[int] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("texts", "style", "styles_yaml", "embedder", "questions")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    STYLES_YAML_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    style: str
    styles_yaml: str
    embedder: str
    questions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., style: _Optional[str] = ..., styles_yaml: _Optional[str] = ..., embedder: _Optional[str] = ..., questions: _Optional[_Iterable[str]] = ...) -> None: ...

class TextScore(_message.Message):
    __slots__ = ("max_similarity", "mean_similarity", "predicted_style", "marker_score", "reasons", "passed", "style_margin", "style_lift", "loop_share", "copied_chars", "relevance", "sense", "centroid_style")
    MAX_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MEAN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_STYLE_FIELD_NUMBER: _ClassVar[int]
    MARKER_SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    STYLE_MARGIN_FIELD_NUMBER: _ClassVar[int]
    STYLE_LIFT_FIELD_NUMBER: _ClassVar[int]
    LOOP_SHARE_FIELD_NUMBER: _ClassVar[int]
    COPIED_CHARS_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_FIELD_NUMBER: _ClassVar[int]
    SENSE_FIELD_NUMBER: _ClassVar[int]
    CENTROID_STYLE_FIELD_NUMBER: _ClassVar[int]
    max_similarity: float
    mean_similarity: float
    predicted_style: str
    marker_score: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    passed: bool
    style_margin: float
    style_lift: float
    loop_share: float
    copied_chars: int
    relevance: float
    sense: float
    centroid_style: str
    def __init__(self, max_similarity: _Optional[float] = ..., mean_similarity: _Optional[float] = ..., predicted_style: _Optional[str] = ..., marker_score: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ..., passed: _Optional[bool] = ..., style_margin: _Optional[float] = ..., style_lift: _Optional[float] = ..., loop_share: _Optional[float] = ..., copied_chars: _Optional[int] = ..., relevance: _Optional[float] = ..., sense: _Optional[float] = ..., centroid_style: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("scores", "mean_similarity", "style_accuracy", "embedder", "style_score", "classifier")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MEAN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    STYLE_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    STYLE_SCORE_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[TextScore]
    mean_similarity: float
    style_accuracy: float
    embedder: str
    style_score: float
    classifier: str
    def __init__(self, scores: _Optional[_Iterable[_Union[TextScore, _Mapping]]] = ..., mean_similarity: _Optional[float] = ..., style_accuracy: _Optional[float] = ..., embedder: _Optional[str] = ..., style_score: _Optional[float] = ..., classifier: _Optional[str] = ...) -> None: ...

class InstrumentsRequest(_message.Message):
    __slots__ = ("embedder",)
    EMBEDDER_FIELD_NUMBER: _ClassVar[int]
    embedder: str
    def __init__(self, embedder: _Optional[str] = ...) -> None: ...

class InstrumentsResponse(_message.Message):
    __slots__ = ("measurement_json",)
    MEASUREMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    measurement_json: str
    def __init__(self, measurement_json: _Optional[str] = ...) -> None: ...
