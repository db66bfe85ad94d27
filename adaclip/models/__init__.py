"""AdaCLIP models: CLIP loading, frame selector, aggregation, headers, the full model and its FLOPs."""

from adaclip.models.adaclip import AdaCLIP, Selection, VideoEmbedding, gather_frames, uniform_indices
from adaclip.models.aggregation import (
    MeanAggregator,
    MLPScoreAggregator,
    ReuseScoresAggregator,
    TransformerAggregator,
    build_aggregator,
)
from adaclip.models.clip import (
    ClipBundle,
    load_clip,
    load_clip_weights,
    load_tokenizer,
    register_model_configs,
)
from adaclip.models.flops import (
    aggregation_gflops,
    gflops_per_video,
    image_encoder_gflops,
    measure_encode_video_gflops,
    selector_gflops,
)
from adaclip.models.headers import SimilarityHeader, WordAggregator, text_token_features
from adaclip.models.selector import FrameSelector

__all__ = [
    "AdaCLIP",
    "ClipBundle",
    "FrameSelector",
    "MLPScoreAggregator",
    "MeanAggregator",
    "ReuseScoresAggregator",
    "Selection",
    "SimilarityHeader",
    "TransformerAggregator",
    "VideoEmbedding",
    "WordAggregator",
    "aggregation_gflops",
    "build_aggregator",
    "gather_frames",
    "gflops_per_video",
    "image_encoder_gflops",
    "load_clip",
    "load_clip_weights",
    "load_tokenizer",
    "measure_encode_video_gflops",
    "register_model_configs",
    "selector_gflops",
    "text_token_features",
    "uniform_indices",
]
