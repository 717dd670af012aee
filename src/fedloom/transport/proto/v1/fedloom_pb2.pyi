from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SiteMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "train_reply", "evaluate_reply", "task_failed", "chunk", "key_advertisement", "shared_keys", "masked_input", "unmask_shares", "refusal")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_REPLY_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_REPLY_FIELD_NUMBER: _ClassVar[int]
    TASK_FAILED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    KEY_ADVERTISEMENT_FIELD_NUMBER: _ClassVar[int]
    SHARED_KEYS_FIELD_NUMBER: _ClassVar[int]
    MASKED_INPUT_FIELD_NUMBER: _ClassVar[int]
    UNMASK_SHARES_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    train_reply: TrainReply
    evaluate_reply: EvaluateReply
    task_failed: TaskFailed
    chunk: Chunk
    key_advertisement: KeyAdvertisement
    shared_keys: SharedKeys
    masked_input: MaskedInput
    unmask_shares: UnmaskShares
    refusal: Refusal
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., train_reply: _Optional[_Union[TrainReply, _Mapping]] = ..., evaluate_reply: _Optional[_Union[EvaluateReply, _Mapping]] = ..., task_failed: _Optional[_Union[TaskFailed, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., key_advertisement: _Optional[_Union[KeyAdvertisement, _Mapping]] = ..., shared_keys: _Optional[_Union[SharedKeys, _Mapping]] = ..., masked_input: _Optional[_Union[MaskedInput, _Mapping]] = ..., unmask_shares: _Optional[_Union[UnmaskShares, _Mapping]] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "site", "layout", "features", "held")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    site: str
    layout: Layout
    features: _containers.RepeatedScalarFieldContainer[str]
    held: HeldModel
    def __init__(self, protocol_version: _Optional[int] = ..., site: _Optional[str] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ..., held: _Optional[_Union[HeldModel, _Mapping]] = ...) -> None: ...

class HeldModel(_message.Message):
    __slots__ = ("round", "digest")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    digest: bytes
    def __init__(self, round: _Optional[int] = ..., digest: _Optional[bytes] = ...) -> None: ...

class Layout(_message.Message):
    __slots__ = ("tensors",)
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "shape", "trainable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    trainable: bool
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., trainable: _Optional[bool] = ...) -> None: ...

class TrainReply(_message.Message):
    __slots__ = ("task", "num_examples", "metrics", "vectors", "payload_length", "held")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_LENGTH_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    task: int
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    vectors: _containers.RepeatedCompositeFieldContainer[VectorHeader]
    payload_length: int
    held: HeldModel
    def __init__(self, task: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., vectors: _Optional[_Iterable[_Union[VectorHeader, _Mapping]]] = ..., payload_length: _Optional[int] = ..., held: _Optional[_Union[HeldModel, _Mapping]] = ...) -> None: ...

class EvaluateReply(_message.Message):
    __slots__ = ("task", "num_examples", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    task: int
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, task: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class TaskFailed(_message.Message):
    __slots__ = ("task", "reason")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task: int
    reason: str
    def __init__(self, task: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("welcome", "heartbeat", "train", "evaluate", "goodbye", "chunk", "secure_train", "key_roster", "masking_request", "unmask_request", "upload_grant")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SECURE_TRAIN_FIELD_NUMBER: _ClassVar[int]
    KEY_ROSTER_FIELD_NUMBER: _ClassVar[int]
    MASKING_REQUEST_FIELD_NUMBER: _ClassVar[int]
    UNMASK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_GRANT_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    heartbeat: Heartbeat
    train: TrainTask
    evaluate: EvaluateTask
    goodbye: Goodbye
    chunk: Chunk
    secure_train: SecureTrainTask
    key_roster: KeyRoster
    masking_request: MaskingRequest
    unmask_request: UnmaskRequest
    upload_grant: UploadGrant
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., train: _Optional[_Union[TrainTask, _Mapping]] = ..., evaluate: _Optional[_Union[EvaluateTask, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., secure_train: _Optional[_Union[SecureTrainTask, _Mapping]] = ..., key_roster: _Optional[_Union[KeyRoster, _Mapping]] = ..., masking_request: _Optional[_Union[MaskingRequest, _Mapping]] = ..., unmask_request: _Optional[_Union[UnmaskRequest, _Mapping]] = ..., upload_grant: _Optional[_Union[UploadGrant, _Mapping]] = ...) -> None: ...

class UploadGrant(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: int
    def __init__(self, task: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("protocol_version", "site", "run", "config", "chunk_bytes", "heartbeat_seconds", "terms", "features")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    site: str
    run: str
    config: TrainingConfig
    chunk_bytes: int
    heartbeat_seconds: float
    terms: RunTerms
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, protocol_version: _Optional[int] = ..., site: _Optional[str] = ..., run: _Optional[str] = ..., config: _Optional[_Union[TrainingConfig, _Mapping]] = ..., chunk_bytes: _Optional[int] = ..., heartbeat_seconds: _Optional[float] = ..., terms: _Optional[_Union[RunTerms, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class RunTerms(_message.Message):
    __slots__ = ("algorithm", "model", "secure_aggregation", "epsilon", "delta", "recipients")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SECURE_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    model: str
    secure_aggregation: bool
    epsilon: float
    delta: float
    recipients: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, algorithm: _Optional[str] = ..., model: _Optional[str] = ..., secure_aggregation: _Optional[bool] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., recipients: _Optional[_Iterable[str]] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TrainingConfig(_message.Message):
    __slots__ = ("algorithm", "algorithm_options", "train", "stages", "loss", "privacy")
    class AlgorithmOptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Scalar
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Scalar, _Mapping]] = ...) -> None: ...
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    algorithm_options: _containers.MessageMap[str, Scalar]
    train: LocalTraining
    stages: _containers.RepeatedCompositeFieldContainer[StageConfig]
    loss: str
    privacy: PrivacyConfig
    def __init__(self, algorithm: _Optional[str] = ..., algorithm_options: _Optional[_Mapping[str, Scalar]] = ..., train: _Optional[_Union[LocalTraining, _Mapping]] = ..., stages: _Optional[_Iterable[_Union[StageConfig, _Mapping]]] = ..., loss: _Optional[str] = ..., privacy: _Optional[_Union[PrivacyConfig, _Mapping]] = ...) -> None: ...

class PrivacyConfig(_message.Message):
    __slots__ = ("mechanism", "clip", "noise_multiplier", "target_quantile", "clip_learning_rate", "count_stddev")
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    TARGET_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    CLIP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_STDDEV_FIELD_NUMBER: _ClassVar[int]
    mechanism: str
    clip: float
    noise_multiplier: float
    target_quantile: float
    clip_learning_rate: float
    count_stddev: float
    def __init__(self, mechanism: _Optional[str] = ..., clip: _Optional[float] = ..., noise_multiplier: _Optional[float] = ..., target_quantile: _Optional[float] = ..., clip_learning_rate: _Optional[float] = ..., count_stddev: _Optional[float] = ...) -> None: ...

class LocalTraining(_message.Message):
    __slots__ = ("lr", "epochs", "steps", "batch_size", "optimizer", "momentum", "weight_decay")
    LR_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    lr: float
    epochs: int
    steps: int
    batch_size: int
    optimizer: str
    momentum: float
    weight_decay: float
    def __init__(self, lr: _Optional[float] = ..., epochs: _Optional[int] = ..., steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., optimizer: _Optional[str] = ..., momentum: _Optional[float] = ..., weight_decay: _Optional[float] = ...) -> None: ...

class StageConfig(_message.Message):
    __slots__ = ("kind", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Scalar
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Scalar, _Mapping]] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    options: _containers.MessageMap[str, Scalar]
    def __init__(self, kind: _Optional[str] = ..., options: _Optional[_Mapping[str, Scalar]] = ...) -> None: ...

class Scalar(_message.Message):
    __slots__ = ("number", "integer", "flag", "text")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    flag: bool
    text: str
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., flag: _Optional[bool] = ..., text: _Optional[str] = ...) -> None: ...

class TrainTask(_message.Message):
    __slots__ = ("task", "round", "seed", "max_steps", "stage_config", "vectors", "payload_length", "delta_from")
    class StageConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: NumberMap
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[NumberMap, _Mapping]] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    STAGE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DELTA_FROM_FIELD_NUMBER: _ClassVar[int]
    task: int
    round: int
    seed: int
    max_steps: int
    stage_config: _containers.MessageMap[str, NumberMap]
    vectors: _containers.RepeatedCompositeFieldContainer[VectorHeader]
    payload_length: int
    delta_from: int
    def __init__(self, task: _Optional[int] = ..., round: _Optional[int] = ..., seed: _Optional[int] = ..., max_steps: _Optional[int] = ..., stage_config: _Optional[_Mapping[str, NumberMap]] = ..., vectors: _Optional[_Iterable[_Union[VectorHeader, _Mapping]]] = ..., payload_length: _Optional[int] = ..., delta_from: _Optional[int] = ...) -> None: ...

class NumberMap(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EvaluateTask(_message.Message):
    __slots__ = ("task", "round", "vectors")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    task: int
    round: int
    vectors: _containers.RepeatedCompositeFieldContainer[VectorHeader]
    def __init__(self, task: _Optional[int] = ..., round: _Optional[int] = ..., vectors: _Optional[_Iterable[_Union[VectorHeader, _Mapping]]] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("reason", "finished")
    REASON_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    reason: str
    finished: bool
    def __init__(self, reason: _Optional[str] = ..., finished: _Optional[bool] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent",)
    SENT_FIELD_NUMBER: _ClassVar[int]
    sent: float
    def __init__(self, sent: _Optional[float] = ...) -> None: ...

class VectorHeader(_message.Message):
    __slots__ = ("name", "length")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    length: int
    def __init__(self, name: _Optional[str] = ..., length: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("task", "data")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    task: int
    data: bytes
    def __init__(self, task: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SecureSetup(_message.Message):
    __slots__ = ("round", "cohort", "degree", "threshold", "bits", "scale", "clip", "max_weight", "weighted", "dims")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    round: int
    cohort: _containers.RepeatedScalarFieldContainer[int]
    degree: int
    threshold: int
    bits: int
    scale: float
    clip: float
    max_weight: int
    weighted: bool
    dims: int
    def __init__(self, round: _Optional[int] = ..., cohort: _Optional[_Iterable[int]] = ..., degree: _Optional[int] = ..., threshold: _Optional[int] = ..., bits: _Optional[int] = ..., scale: _Optional[float] = ..., clip: _Optional[float] = ..., max_weight: _Optional[int] = ..., weighted: _Optional[bool] = ..., dims: _Optional[int] = ...) -> None: ...

class SecureTrainTask(_message.Message):
    __slots__ = ("train", "client", "setup")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SETUP_FIELD_NUMBER: _ClassVar[int]
    train: TrainTask
    client: int
    setup: SecureSetup
    def __init__(self, train: _Optional[_Union[TrainTask, _Mapping]] = ..., client: _Optional[int] = ..., setup: _Optional[_Union[SecureSetup, _Mapping]] = ...) -> None: ...

class PublicKeys(_message.Message):
    __slots__ = ("client", "cipher_key", "mask_key")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHER_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    client: int
    cipher_key: bytes
    mask_key: bytes
    def __init__(self, client: _Optional[int] = ..., cipher_key: _Optional[bytes] = ..., mask_key: _Optional[bytes] = ...) -> None: ...

class KeyAdvertisement(_message.Message):
    __slots__ = ("task", "keys", "held")
    TASK_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    task: int
    keys: PublicKeys
    held: HeldModel
    def __init__(self, task: _Optional[int] = ..., keys: _Optional[_Union[PublicKeys, _Mapping]] = ..., held: _Optional[_Union[HeldModel, _Mapping]] = ...) -> None: ...

class KeyRoster(_message.Message):
    __slots__ = ("task", "client", "keys", "neighbours")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    task: int
    client: int
    keys: _containers.RepeatedCompositeFieldContainer[PublicKeys]
    neighbours: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task: _Optional[int] = ..., client: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[PublicKeys, _Mapping]]] = ..., neighbours: _Optional[_Iterable[int]] = ...) -> None: ...

class EncryptedShare(_message.Message):
    __slots__ = ("sender", "recipient", "sealed")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    sender: int
    recipient: int
    sealed: bytes
    def __init__(self, sender: _Optional[int] = ..., recipient: _Optional[int] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class SharedKeys(_message.Message):
    __slots__ = ("task", "session", "client", "shares")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    task: int
    session: bytes
    client: int
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, task: _Optional[int] = ..., session: _Optional[bytes] = ..., client: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class MaskingRequest(_message.Message):
    __slots__ = ("task", "client", "session", "shares")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    task: int
    client: int
    session: bytes
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, task: _Optional[int] = ..., client: _Optional[int] = ..., session: _Optional[bytes] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class MaskedInput(_message.Message):
    __slots__ = ("task", "session", "client", "length", "bits")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    task: int
    session: bytes
    client: int
    length: int
    bits: int
    def __init__(self, task: _Optional[int] = ..., session: _Optional[bytes] = ..., client: _Optional[int] = ..., length: _Optional[int] = ..., bits: _Optional[int] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("task", "client", "session", "survivors", "dropped")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    task: int
    client: int
    session: bytes
    survivors: _containers.RepeatedScalarFieldContainer[int]
    dropped: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task: _Optional[int] = ..., client: _Optional[int] = ..., session: _Optional[bytes] = ..., survivors: _Optional[_Iterable[int]] = ..., dropped: _Optional[_Iterable[int]] = ...) -> None: ...

class SecretShare(_message.Message):
    __slots__ = ("owner", "limbs")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LIMBS_FIELD_NUMBER: _ClassVar[int]
    owner: int
    limbs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, owner: _Optional[int] = ..., limbs: _Optional[_Iterable[int]] = ...) -> None: ...

class UnmaskShares(_message.Message):
    __slots__ = ("task", "session", "client", "seed_shares", "key_shares")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    task: int
    session: bytes
    client: int
    seed_shares: _containers.RepeatedCompositeFieldContainer[SecretShare]
    key_shares: _containers.RepeatedCompositeFieldContainer[SecretShare]
    def __init__(self, task: _Optional[int] = ..., session: _Optional[bytes] = ..., client: _Optional[int] = ..., seed_shares: _Optional[_Iterable[_Union[SecretShare, _Mapping]]] = ..., key_shares: _Optional[_Iterable[_Union[SecretShare, _Mapping]]] = ...) -> None: ...
