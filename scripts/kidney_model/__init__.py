"""Model toolchain for kidney-screen: training, export, int8 quantization, parity, goldens."""
