"""The video input pipeline: reading, clip sampling, transforms, dataset lists, loaders, synthetic data.

Stable public API (shapes: frames ``(T, H, W, 3)`` uint8 RGB; clips ``(C, T, H, W)`` float32; batches
``(N, C, T, H, W)``)::

    read_video(path, indices=None, size=None) -> (T, H, W, 3) uint8     # p3d.data.video
    VideoReader(path).get_frames(indices, size=(H, W)); probe_video(path) -> VideoInfo
    sample_train_clip(num_frames, clip_len=16, stride=1, rng=seed) -> (clip_len,) int64   # p3d.data.sampling
    sample_test_clips(num_frames, num_clips=20, clip_len=16, stride=1) -> (num_clips, clip_len) int64
    ClipTransform(spec, train)(frames, rng) -> (C, T, H, W) float32   # p3d.data.transforms
    build_samples(kind, root, annotations=..., split=..., subset=...) -> SampleList   # p3d.data.datasets
    samples_from_path(folder | video | list | manifest) -> SampleList; video_ids(samples) -> ids
    ClipDataset(samples, spec, seed=0)[i] -> (clip (C, T, H, W), label)
    VideoClipsDataset(samples, spec, num_clips=20, flat=False)[i] -> {"clips", "label", "video_index", ...}
    build_loader(dataset, batch_size, train=..., num_workers=...) -> DataLoader   # p3d.data.loader
    plan_loader(model_rate, probe_decode_rate(dataset), items_per_batch=...) -> LoaderPlan (workers, prefetch)
    make_synthetic_dataset(root, num_classes=6, videos_per_class=30, ..., seed=0) -> root  # p3d.data.synthetic

Unreadable videos raise :class:`p3d.errors.VideoReadError` (path + reason).
"""

from p3d.data.datasets import (
    DATASET_KINDS,
    ClipDataset,
    Sample,
    SampleList,
    VideoClipsDataset,
    build_samples,
    parse_activitynet,
    parse_folder,
    parse_kinetics,
    parse_manifest,
    parse_sports1m,
    parse_ucf101,
    samples_from_path,
    video_ids,
    write_manifest,
)
from p3d.data.loader import LoaderPlan, build_loader, default_num_workers, plan_loader, probe_decode_rate
from p3d.data.sampling import clip_indices, sample_test_clips, sample_train_clip
from p3d.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from p3d.data.synthetic import make_synthetic_dataset, make_synthetic_untrimmed, render_video
from p3d.data.transforms import ClipTransform, normalize, resize_frames
from p3d.data.video import VideoInfo, VideoReader, list_videos, probe_video, read_video
from p3d.errors import VideoReadError

__all__ = [
    "DATASET_KINDS",
    "SYNTHETIC_CLASSES",
    "ClipDataset",
    "ClipTransform",
    "Sample",
    "SampleList",
    "VideoClipsDataset",
    "VideoInfo",
    "VideoReadError",
    "VideoReader",
    "LoaderPlan",
    "build_loader",
    "default_num_workers",
    "plan_loader",
    "probe_decode_rate",
    "build_samples",
    "clip_indices",
    "list_videos",
    "make_synthetic_dataset",
    "make_synthetic_untrimmed",
    "normalize",
    "parse_activitynet",
    "parse_folder",
    "parse_kinetics",
    "parse_manifest",
    "parse_sports1m",
    "parse_ucf101",
    "probe_video",
    "read_video",
    "render_video",
    "resize_frames",
    "sample_test_clips",
    "sample_train_clip",
    "write_manifest",
    "samples_from_path",
    "video_ids",
]
