"""p3d: Pseudo-3D Residual Networks (Qiu, Yao & Mei, ICCV 2017) for video."""

__version__ = "0.1.0"
