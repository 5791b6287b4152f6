//! The convolution shape suite shared by `examples/compare.rs` and `benches/conv.rs` (the
//! same shapes as `../shared/anchors/shapes.json`, which times the peers).

use convkit::{Conv2dParams, Padding};

/// One layer: `name: N,C,H,W → K, R×S, stride, pad, dilation, groups`.
pub struct Shape {
    pub name: &'static str,
    pub x: [usize; 4],
    pub k: usize,
    pub r: usize,
    pub stride: usize,
    /// `None` means "same" padding.
    pub pad: Option<usize>,
    pub dilation: usize,
    pub groups: usize,
}

impl Shape {
    pub fn params(&self) -> Conv2dParams {
        Conv2dParams::default()
            .stride(self.stride, self.stride)
            .dilation(self.dilation, self.dilation)
            .groups(self.groups)
            .padding(self.pad.map_or(Padding::Same, Padding::uniform))
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [self.k, self.x[1] / self.groups, self.r, self.r]
    }
}

macro_rules! suite {
    ($($name:literal: $n:literal,$c:literal,$h:literal,$w:literal => $k:literal, $r:literal, $s:literal, $pad:expr, $d:literal, $g:literal;)*) => {
        /// Every shape of the suite.
        pub const SUITE: &[Shape] = &[$(Shape { name: $name, x: [$n, $c, $h, $w], k: $k, r: $r, stride: $s, pad: $pad, dilation: $d, groups: $g }),*];
    };
}

// name: N,C,H,W => K, R (= S), stride, padding (None = same), dilation, groups
suite! {
    "seed_tiny": 1,1,3,3 => 1, 2, 1, Some(0), 1, 1;
    "lenet_c1": 64,1,28,28 => 6, 5, 1, Some(2), 1, 1;
    "lenet_c3": 64,6,14,14 => 16, 5, 1, Some(0), 1, 1;
    "cifar_c1_b1": 1,3,32,32 => 16, 3, 1, Some(1), 1, 1;
    "alexnet_c1": 8,3,224,224 => 64, 11, 4, Some(2), 1, 1;
    "vgg_c3": 1,256,56,56 => 256, 3, 1, Some(1), 1, 1;
    "resnet_c2": 1,64,56,56 => 64, 3, 1, Some(1), 1, 1;
    "resnet_c2_b16": 16,64,56,56 => 64, 3, 1, Some(1), 1, 1;
    "resnet_down": 1,64,56,56 => 128, 3, 2, Some(1), 1, 1;
    "resnet_1x1": 1,256,56,56 => 64, 1, 1, Some(0), 1, 1;
    "resnet_1x1_s2": 1,64,56,56 => 128, 1, 2, Some(0), 1, 1;
    "mobilenet_dw": 1,32,112,112 => 32, 3, 1, Some(1), 1, 32;
    "dilated": 1,64,56,56 => 64, 3, 1, Some(2), 2, 1;
    "resnet_c2_s1p0": 1,64,56,56 => 64, 3, 1, Some(0), 1, 1;
    "resnet_c2_s2p0": 1,64,56,56 => 64, 3, 2, Some(0), 1, 1;
    "resnet_c2_s2p1": 1,64,56,56 => 64, 3, 2, Some(1), 1, 1;
    "resnet_c2_s1p1_same": 1,64,56,56 => 64, 3, 1, None, 1, 1;
}
