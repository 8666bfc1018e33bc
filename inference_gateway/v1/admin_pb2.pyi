from inference_gateway.v1 import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("id", "name", "prefix", "models", "created_at", "expires_at", "last_used_at", "revoked_at", "status", "limits", "priority", "remaining")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    prefix: str
    models: _containers.RepeatedScalarFieldContainer[str]
    created_at: int
    expires_at: int
    last_used_at: int
    revoked_at: int
    status: str
    limits: TokenLimits
    priority: str
    remaining: TokenLimits
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., prefix: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., last_used_at: _Optional[int] = ..., revoked_at: _Optional[int] = ..., status: _Optional[str] = ..., limits: _Optional[_Union[TokenLimits, _Mapping]] = ..., priority: _Optional[str] = ..., remaining: _Optional[_Union[TokenLimits, _Mapping]] = ...) -> None: ...

class TokenLimits(_message.Message):
    __slots__ = ("rpm", "tpm", "max_concurrency", "daily_tokens", "monthly_tokens")
    RPM_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    DAILY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    rpm: int
    tpm: int
    max_concurrency: int
    daily_tokens: int
    monthly_tokens: int
    def __init__(self, rpm: _Optional[int] = ..., tpm: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., daily_tokens: _Optional[int] = ..., monthly_tokens: _Optional[int] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "models", "expires_in_seconds", "expires_at", "limits", "priority")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    models: _containers.RepeatedScalarFieldContainer[str]
    expires_in_seconds: int
    expires_at: int
    limits: TokenLimits
    priority: str
    def __init__(self, name: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., expires_in_seconds: _Optional[int] = ..., expires_at: _Optional[int] = ..., limits: _Optional[_Union[TokenLimits, _Mapping]] = ..., priority: _Optional[str] = ...) -> None: ...

class UpdateTokenRequest(_message.Message):
    __slots__ = ("id", "limits", "priority")
    ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    limits: TokenLimits
    priority: str
    def __init__(self, id: _Optional[str] = ..., limits: _Optional[_Union[TokenLimits, _Mapping]] = ..., priority: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "secret")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    token: Token
    secret: str
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("model", "include_revoked")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    model: str
    include_revoked: bool
    def __init__(self, model: _Optional[str] = ..., include_revoked: _Optional[bool] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class GetTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class QueryUsageRequest(_message.Message):
    __slots__ = ("token_id", "model", "start_time", "end_time", "group_by")
    class GroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        GROUP_BY_UNSPECIFIED: _ClassVar[QueryUsageRequest.GroupBy]
        GROUP_BY_TOKEN: _ClassVar[QueryUsageRequest.GroupBy]
        GROUP_BY_MODEL: _ClassVar[QueryUsageRequest.GroupBy]
        GROUP_BY_TOKEN_AND_MODEL: _ClassVar[QueryUsageRequest.GroupBy]
    GROUP_BY_UNSPECIFIED: QueryUsageRequest.GroupBy
    GROUP_BY_TOKEN: QueryUsageRequest.GroupBy
    GROUP_BY_MODEL: QueryUsageRequest.GroupBy
    GROUP_BY_TOKEN_AND_MODEL: QueryUsageRequest.GroupBy
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    model: str
    start_time: float
    end_time: float
    group_by: QueryUsageRequest.GroupBy
    def __init__(self, token_id: _Optional[str] = ..., model: _Optional[str] = ..., start_time: _Optional[float] = ..., end_time: _Optional[float] = ..., group_by: _Optional[_Union[QueryUsageRequest.GroupBy, str]] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("token_id", "token_name", "model", "requests", "errors", "prompt_tokens", "completion_tokens", "mean_latency_ms", "end_users", "limits", "remaining")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    END_USERS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    token_name: str
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    mean_latency_ms: float
    end_users: int
    limits: TokenLimits
    remaining: TokenLimits
    def __init__(self, token_id: _Optional[str] = ..., token_name: _Optional[str] = ..., model: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., mean_latency_ms: _Optional[float] = ..., end_users: _Optional[int] = ..., limits: _Optional[_Union[TokenLimits, _Mapping]] = ..., remaining: _Optional[_Union[TokenLimits, _Mapping]] = ...) -> None: ...

class QueryUsageResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...
