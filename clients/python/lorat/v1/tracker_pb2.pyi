import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OverloadPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OVERLOAD_POLICY_UNSPECIFIED: _ClassVar[OverloadPolicy]
    LATEST: _ClassVar[OverloadPolicy]
    FIFO: _ClassVar[OverloadPolicy]
    EVERY_FRAME: _ClassVar[OverloadPolicy]

class TrackStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRACK_STATUS_UNSPECIFIED: _ClassVar[TrackStatus]
    TRACKING: _ClassVar[TrackStatus]
    DROPPED: _ClassVar[TrackStatus]
    RECONNECTING: _ClassVar[TrackStatus]
    STOPPED: _ClassVar[TrackStatus]
    FAILED: _ClassVar[TrackStatus]
    CONNECTING: _ClassVar[TrackStatus]
    MOVED: _ClassVar[TrackStatus]
    LOST: _ClassVar[TrackStatus]

class SourceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_STATE_UNSPECIFIED: _ClassVar[SourceState]
    SOURCE_PUSH: _ClassVar[SourceState]
    SOURCE_CONNECTING: _ClassVar[SourceState]
    SOURCE_RUNNING: _ClassVar[SourceState]
    SOURCE_RECONNECTING: _ClassVar[SourceState]
    SOURCE_FAILED: _ClassVar[SourceState]
    SOURCE_STOPPED: _ClassVar[SourceState]
OVERLOAD_POLICY_UNSPECIFIED: OverloadPolicy
LATEST: OverloadPolicy
FIFO: OverloadPolicy
EVERY_FRAME: OverloadPolicy
TRACK_STATUS_UNSPECIFIED: TrackStatus
TRACKING: TrackStatus
DROPPED: TrackStatus
RECONNECTING: TrackStatus
STOPPED: TrackStatus
FAILED: TrackStatus
CONNECTING: TrackStatus
MOVED: TrackStatus
LOST: TrackStatus
SOURCE_STATE_UNSPECIFIED: SourceState
SOURCE_PUSH: SourceState
SOURCE_CONNECTING: SourceState
SOURCE_RUNNING: SourceState
SOURCE_RECONNECTING: SourceState
SOURCE_FAILED: SourceState
SOURCE_STOPPED: SourceState

class Box(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    height: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., height: _Optional[float] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("encoded", "raw", "h264", "pts", "capture_time")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    H264_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    h264: bytes
    pts: int
    capture_time: _timestamp_pb2.Timestamp
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ..., h264: _Optional[bytes] = ..., pts: _Optional[int] = ..., capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("format", "width", "height", "stride", "data")
    class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PIXEL_FORMAT_UNSPECIFIED: _ClassVar[RawImage.PixelFormat]
        RGB24: _ClassVar[RawImage.PixelFormat]
        BGR24: _ClassVar[RawImage.PixelFormat]
    PIXEL_FORMAT_UNSPECIFIED: RawImage.PixelFormat
    RGB24: RawImage.PixelFormat
    BGR24: RawImage.PixelFormat
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    format: RawImage.PixelFormat
    width: int
    height: int
    stride: int
    data: bytes
    def __init__(self, format: _Optional[_Union[RawImage.PixelFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., stride: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RtspSource(_message.Message):
    __slots__ = ("url", "options", "init_pts")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INIT_PTS_FIELD_NUMBER: _ClassVar[int]
    url: str
    options: _containers.ScalarMap[str, str]
    init_pts: int
    def __init__(self, url: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., init_pts: _Optional[int] = ...) -> None: ...

class TrackOptions(_message.Message):
    __slots__ = ("overload_policy", "max_frame_age_seconds", "max_queue")
    OVERLOAD_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    overload_policy: OverloadPolicy
    max_frame_age_seconds: float
    max_queue: int
    def __init__(self, overload_policy: _Optional[_Union[OverloadPolicy, str]] = ..., max_frame_age_seconds: _Optional[float] = ..., max_queue: _Optional[int] = ...) -> None: ...

class StartTrackRequest(_message.Message):
    __slots__ = ("track_id", "first_frame", "rtsp", "initial_box", "model", "options", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    RTSP_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BOX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    first_frame: Frame
    rtsp: RtspSource
    initial_box: Box
    model: str
    options: TrackOptions
    labels: _containers.ScalarMap[str, str]
    def __init__(self, track_id: _Optional[str] = ..., first_frame: _Optional[_Union[Frame, _Mapping]] = ..., rtsp: _Optional[_Union[RtspSource, _Mapping]] = ..., initial_box: _Optional[_Union[Box, _Mapping]] = ..., model: _Optional[str] = ..., options: _Optional[_Union[TrackOptions, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartTrackResponse(_message.Message):
    __slots__ = ("track_id", "first_result")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_RESULT_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    first_result: TrackResult
    def __init__(self, track_id: _Optional[str] = ..., first_result: _Optional[_Union[TrackResult, _Mapping]] = ...) -> None: ...

class PushFrameRequest(_message.Message):
    __slots__ = ("track_id", "frame")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    frame: Frame
    def __init__(self, track_id: _Optional[str] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class TrackResult(_message.Message):
    __slots__ = ("track_id", "frame_number", "source_pts", "capture_time", "receive_time", "publish_time", "box", "confidence", "status", "drop_reason", "message", "model_id")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PTS_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DROP_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    frame_number: int
    source_pts: int
    capture_time: _timestamp_pb2.Timestamp
    receive_time: _timestamp_pb2.Timestamp
    publish_time: _timestamp_pb2.Timestamp
    box: Box
    confidence: float
    status: TrackStatus
    drop_reason: str
    message: str
    model_id: str
    def __init__(self, track_id: _Optional[str] = ..., frame_number: _Optional[int] = ..., source_pts: _Optional[int] = ..., capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., confidence: _Optional[float] = ..., status: _Optional[_Union[TrackStatus, str]] = ..., drop_reason: _Optional[str] = ..., message: _Optional[str] = ..., model_id: _Optional[str] = ...) -> None: ...

class WatchTracksRequest(_message.Message):
    __slots__ = ("track_ids", "from_frame")
    TRACK_IDS_FIELD_NUMBER: _ClassVar[int]
    FROM_FRAME_FIELD_NUMBER: _ClassVar[int]
    track_ids: _containers.RepeatedScalarFieldContainer[str]
    from_frame: int
    def __init__(self, track_ids: _Optional[_Iterable[str]] = ..., from_frame: _Optional[int] = ...) -> None: ...

class StopTrackRequest(_message.Message):
    __slots__ = ("track_id",)
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    def __init__(self, track_id: _Optional[str] = ...) -> None: ...

class GetTrackRequest(_message.Message):
    __slots__ = ("track_id",)
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    def __init__(self, track_id: _Optional[str] = ...) -> None: ...

class ListTracksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrackInfo(_message.Message):
    __slots__ = ("track_id", "status", "source_state", "source", "model_id", "options", "last_result", "frames_processed", "frames_dropped", "created_time", "owner", "message", "labels")
    class FramesDroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_RESULT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    CREATED_TIME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    track_id: str
    status: TrackStatus
    source_state: SourceState
    source: str
    model_id: str
    options: TrackOptions
    last_result: TrackResult
    frames_processed: int
    frames_dropped: _containers.ScalarMap[str, int]
    created_time: _timestamp_pb2.Timestamp
    owner: str
    message: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, track_id: _Optional[str] = ..., status: _Optional[_Union[TrackStatus, str]] = ..., source_state: _Optional[_Union[SourceState, str]] = ..., source: _Optional[str] = ..., model_id: _Optional[str] = ..., options: _Optional[_Union[TrackOptions, _Mapping]] = ..., last_result: _Optional[_Union[TrackResult, _Mapping]] = ..., frames_processed: _Optional[int] = ..., frames_dropped: _Optional[_Mapping[str, int]] = ..., created_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ..., message: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListTracksResponse(_message.Message):
    __slots__ = ("tracks",)
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    tracks: _containers.RepeatedCompositeFieldContainer[TrackInfo]
    def __init__(self, tracks: _Optional[_Iterable[_Union[TrackInfo, _Mapping]]] = ...) -> None: ...
