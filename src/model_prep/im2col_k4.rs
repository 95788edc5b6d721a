//! Eager im2col for 8-bit convolutions whose matmul kernel reads the K=4-inner layout
//! (`PackedI8K4`: x86 AVX-512-VNNI and AVX-VNNI, aarch64 SDOT).
//!
//! tract packs the input of every quantized convolution that is not 1x1 through its generic
//! `Im2col` patcher, which stores one byte at a time through a layout-agnostic writer: 12.7 of the
//! 21.5 ms of the int8 QOperator DenseNet on the development machine (`bench --ops`, README
//! "Speed"). [`Im2ColK4`] writes the same bytes in 2.3 ms: the input is padded once, the
//! geometry is reduced at load time to runs of output positions whose patches are side by side in
//! the padded input, and each run interleaves four contiguous K rows into the panel, a loop the
//! compiler vectorises. The tests below compare its bytes with tract's op.

use tract_linalg::mmm::{EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::pack::PackedI8K4;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::pack_k4::k4_offset;

/// A 2-D convolution's patch geometry, batch 1, one group, channels first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Geometry {
    channels: usize,
    input: [usize; 2],
    output: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pad_before: [usize; 2],
}

impl Geometry {
    fn k(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    fn n(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Input rows and columns that land inside the padded input (the rest are never read).
    fn copied(&self) -> [usize; 2] {
        let padded = self.padded();
        std::array::from_fn(|axis| self.input[axis].min(padded[axis].saturating_sub(self.pad_before[axis])))
    }

    /// Height and width of the padded input that the patches read: exactly what they span.
    fn padded(&self) -> [usize; 2] {
        std::array::from_fn(|axis| {
            (self.output[axis] - 1) * self.strides[axis] + (self.kernel[axis] - 1) * self.dilations[axis] + 1
        })
    }

    /// Bytes per row of the padded input as it is stored: its columns split by their phase
    /// modulo the horizontal stride ([`Self::column`]).
    fn row_len(&self) -> usize {
        self.phase_len() * self.strides[1]
    }

    /// Bytes per stride phase of a stored row ([`Self::column`]).
    fn phase_len(&self) -> usize {
        self.padded()[1].div_ceil(self.strides[1])
    }

    /// Bytes per channel of the stored padded input.
    fn plane(&self) -> usize {
        self.padded()[0] * self.row_len()
    }

    /// Where column `j` of a padded row is stored. With a horizontal stride `s` > 1 a row is stored
    /// as its `s` phases one after the other (columns 0, s, 2s.., then 1, s + 1..), so that the
    /// patches of consecutive output positions start at consecutive bytes, as at stride 1, and
    /// a run of them is a contiguous copy. A patch's K rows then sit at the same offsets from
    /// its top-left value for every output position: `column(x * s + o) = x + column(o)`.
    fn column(&self, j: usize) -> usize {
        let stride = self.strides[1];
        (j % stride) * self.phase_len() + j / stride
    }
}

/// Consecutive output positions `lane..lane + len` of `panel` whose patches' top-left values are
/// consecutive in the padded input from `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    panel: usize,
    lane: usize,
    len: usize,
    position: usize,
}

/// Replacement for tract's `Im2Col` on 8-bit NCHW input, one group, batch 1, `PackedI8K4` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Im2ColK4 {
    geometry: Geometry,
    format: PackedI8K4,
    datum_type: DatumType,
    /// Output positions grouped by panel into runs whose patches sit side by side in the padded
    /// input (a row of the output, within one panel, at stride 1).
    runs: Vec<Run>,
    order: KOrder,
}

/// The order of the K rows in the packed matrix, and where each group of four is read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KOrder {
    /// tract's: channel, kernel y, kernel x. Each K row's offset from a patch's top-left value in
    /// the padded input, in full groups of four and the rows of the last partial group; a group
    /// interleaves four rows.
    ChannelMajor { groups: Vec<[usize; 4]>, tail: Vec<usize> },
    /// Kernel y, kernel x, channel, for a channel count that is a multiple of 4: a group of four
    /// K rows is four channels at one tap. The padded input is first copied with each four
    /// channels interleaved, so a group's `r` columns are one contiguous copy from it. Each tap's
    /// offset from a patch's top-left position. The weights must be in the same order
    /// ([`tap_major_weights`]).
    TapMajor { taps: Vec<usize> },
}

impl Im2ColK4 {
    /// The replacement for `op` reading `input`, when it covers the case; `None` leaves tract's op.
    pub fn replacing(op: &Im2Col, input: &TypedFact, output: &TypedFact) -> Option<Self> {
        let format = output
            .exotic_fact
            .as_ref()?
            .downcast_ref::<PackedExoticFact>()?
            .format
            .downcast_ref::<PackedI8K4>()?
            .clone();
        let datum_type = input.datum_type;
        if op.group != 1 || !(datum_type == i8::datum_type() || datum_type == u8::datum_type()) {
            return None;
        }
        let spec = &op.pool_spec;
        let shape = input.shape.as_concrete()?;
        let (channels, input_hw) = match (spec.data_format, shape) {
            (DataFormat::NCHW, &[1, c, h, w]) | (DataFormat::CHW, &[c, h, w]) => (c, [h, w]),
            _ => return None,
        };
        if spec.kernel_shape.len() != 2 || spec.input_channels != channels {
            return None;
        }
        let padding = spec.computed_padding(&input_hw);
        let (strides, dilations) = (spec.strides(), spec.dilations());
        let geometry = Geometry {
            channels,
            input: input_hw,
            output: [padding[0].convoluted, padding[1].convoluted],
            kernel: [spec.kernel_shape[0], spec.kernel_shape[1]],
            strides: [strides[0], strides[1]],
            dilations: [dilations[0], dilations[1]],
            pad_before: [padding[0].pad_before, padding[1].pad_before],
        };
        if geometry.n() == 0 || geometry.k() == 0 {
            return None;
        }
        let (row_len, plane) = (geometry.row_len(), geometry.plane());
        let mut runs: Vec<Run> = Vec::new();
        for (n, (y, x)) in
            (0..geometry.output[0]).flat_map(|y| (0..geometry.output[1]).map(move |x| (y, x))).enumerate()
        {
            let (panel, lane) = (n / format.r, n % format.r);
            let position = y * geometry.strides[0] * row_len + geometry.column(x * geometry.strides[1]);
            match runs.last_mut() {
                Some(run) if run.panel == panel && run.position + run.len == position => run.len += 1,
                _ => runs.push(Run { panel, lane, len: 1, position }),
            }
        }
        let [kernel_h, kernel_w] = geometry.kernel;
        let k_offsets: Vec<usize> = (0..channels)
            .flat_map(|c| (0..kernel_h).flat_map(move |ky| (0..kernel_w).map(move |kx| (c, ky, kx))))
            .map(|(c, ky, kx)| {
                c * plane + ky * geometry.dilations[0] * row_len + geometry.column(kx * geometry.dilations[1])
            })
            .collect();
        let (groups, tail) = super::pack_k4::groups_of_four(&k_offsets);
        let order = KOrder::ChannelMajor { groups, tail };
        let replacement = Im2ColK4 { geometry, format, datum_type, runs, order };
        // The packed matrix must be the one tract's matmul was planned for.
        let facts = replacement.output_facts(&[input]).ok()?;
        (facts.first() == Some(output)).then_some(replacement)
    }

    /// The same im2col with K in tap-major order ([`KOrder::TapMajor`]), when the channels come
    /// in fours, the kernel has more than one tap and the horizontal stride is 1; the matmul's
    /// weights must be permuted with [`tap_major_weights`].
    pub fn tap_major(&self) -> Option<Self> {
        let g = &self.geometry;
        let [kernel_h, kernel_w] = g.kernel;
        if !g.channels.is_multiple_of(4)
            || g.strides[1] != 1
            || kernel_h * kernel_w < 2
            || !matches!(self.order, KOrder::ChannelMajor { .. })
        {
            return None;
        }
        let row_len = g.row_len();
        let taps = (0..kernel_h)
            .flat_map(|ky| (0..kernel_w).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| ky * g.dilations[0] * row_len + g.column(kx * g.dilations[1]))
            .collect();
        Some(Self { order: KOrder::TapMajor { taps }, ..self.clone() })
    }

    /// Input channels and kernel taps: K is their product.
    pub fn channels_and_taps(&self) -> (usize, usize) {
        (self.geometry.channels, self.geometry.kernel[0] * self.geometry.kernel[1])
    }

    fn panel_len(&self) -> usize {
        self.format.single_panel_len(self.geometry.k())
    }

    /// The channels-first `input` inside a border of `pad`, cut to what the patches read, each row
    /// stored by phases of the horizontal stride ([`Geometry::column`]).
    fn pad_input(&self, input: &[u8], pad: u8) -> Vec<u8> {
        let g = &self.geometry;
        let (row_len, plane) = (g.row_len(), g.plane());
        let mut padded = vec![pad; g.channels * plane];
        let [rows, cols] = g.copied();
        for (source, target) in input.chunks_exact(g.input[0] * g.input[1]).zip(padded.chunks_exact_mut(plane)) {
            for y in 0..rows {
                let from = &source[y * g.input[1]..][..cols];
                let to = &mut target[(g.pad_before[0] + y) * row_len..][..row_len];
                if g.strides[1] == 1 {
                    to[g.pad_before[1]..][..cols].copy_from_slice(from);
                } else {
                    // Phase by phase: the input columns of one phase are every `stride`-th.
                    let stride = g.strides[1];
                    for phase in 0..stride {
                        let first = (phase + stride - g.pad_before[1] % stride) % stride;
                        let Some(from) = from.get(first..) else { continue };
                        let to = &mut to[g.column(g.pad_before[1] + first)..];
                        for (to, &value) in to.iter_mut().zip(from.iter().step_by(stride)) {
                            *to = value;
                        }
                    }
                }
            }
        }
        padded
    }

    /// The channels-first `input` inside a border of `pad`, cut to what the patches read, with
    /// each four channels interleaved: position `p` of channel quad `q` is the four bytes at
    /// `(q * padded_h * padded_w + p) * 4`.
    #[inline(always)]
    fn interleave_input(&self, input: &[u8], pad: u8) -> Vec<u8> {
        let g = &self.geometry;
        let [padded_h, padded_w] = g.padded();
        let (plane, input_plane) = (padded_h * padded_w, g.input[0] * g.input[1]);
        let mut quads = vec![pad; g.channels * plane];
        let [rows, cols] = g.copied();
        for (source, target) in input.chunks_exact(4 * input_plane).zip(quads.chunks_exact_mut(4 * plane)) {
            for y in 0..rows {
                let row = |channel: usize| &source[channel * input_plane + y * g.input[1]..][..cols];
                let to = ((g.pad_before[0] + y) * padded_w + g.pad_before[1]) * 4;
                super::pack_k4::interleave_rows(&mut target[to..][..4 * cols], [row(0), row(1), row(2), row(3)]);
            }
        }
        quads
    }

    /// [`KOrder::TapMajor`]'s packing: for each run, each tap and each channel quad, one copy of
    /// `4 * len` bytes from the interleaved input.
    #[inline(always)]
    fn pack_tap_major(&self, quads: &[u8], taps: &[usize], packed: &mut [u8]) {
        let panel_len = self.panel_len();
        for run in &self.runs {
            let panel = &mut packed[run.panel * panel_len..][..panel_len];
            // Fixed lengths for the runs of DenseNet's feature maps: a copy of a constant size is
            // a few vector moves, where a variable one is a call to `memmove`.
            match run.len {
                16 => self.copy_run::<16>(run, run.len, quads, taps, panel),
                8 => self.copy_run::<8>(run, run.len, quads, taps, panel),
                4 => self.copy_run::<4>(run, run.len, quads, taps, panel),
                len => self.copy_run::<0>(run, len, quads, taps, panel),
            }
        }
    }

    /// One run of [`Self::pack_tap_major`]: `N` columns, or `len` when `N` is 0.
    #[inline(always)]
    fn copy_run<const N: usize>(&self, run: &Run, len: usize, quads: &[u8], taps: &[usize], panel: &mut [u8]) {
        let len = if N == 0 { len } else { N };
        let g = &self.geometry;
        let [padded_h, padded_w] = g.padded();
        let (plane, quads_per_tap) = (padded_h * padded_w, g.channels / 4);
        let mut blocks = panel.chunks_exact_mut(4 * self.format.r);
        for &tap in taps {
            for (quad, block) in (0..quads_per_tap).zip(blocks.by_ref()) {
                let from = (quad * plane + run.position + tap) * 4;
                block[4 * run.lane..][..4 * len].copy_from_slice(&quads[from..][..4 * len]);
            }
        }
    }

    /// Writes columns `0..n` of every panel of `packed` (`panels * panel_len` bytes), K padding
    /// lanes as 0. Each run of positions interleaves four contiguous slices.
    #[inline(always)]
    fn pack(&self, padded: &[u8], groups: &[[usize; 4]], tail: &[usize], packed: &mut [u8]) {
        let (r, panel_len) = (self.format.r, self.panel_len());
        for run in &self.runs {
            let panel = &mut packed[run.panel * panel_len..][..panel_len];
            let source = &padded[run.position..];
            super::pack_k4::interleave_groups(panel, r, run.lane, run.len, source, groups);
            if !tail.is_empty() {
                let block = &mut panel[groups.len() * 4 * r + 4 * run.lane..][..4 * run.len];
                let row = |lane: usize| tail.get(lane).map(|&k| &source[k..][..run.len]);
                super::pack_k4::interleave_k4(block, [row(0), row(1), row(2), row(3)]);
            }
        }
    }
}

/// The packed weights `weights` of a convolution (a `PackedI8K4` matrix, K = `channels * taps` in
/// tract's channel-major order, as a `Const` holds it) with K reordered to [`KOrder::TapMajor`]'s
/// order; `None` when they are not such a matrix. A permutation of K on both sides leaves every
/// dot product the same integer.
pub fn tap_major_weights(weights: &Tensor, channels: usize, taps: usize) -> TractResult<Option<Tensor>> {
    let Ok(storage) = weights.try_storage_as::<PackedMatrixStorage>() else { return Ok(None) };
    let [value] = storage.values() else { return Ok(None) };
    let Some(value) = value.downcast_ref::<EagerPackedInput>() else { return Ok(None) };
    let k = channels * taps;
    // Where byte (k, row i) of a panel sits: K=4-inner panels (the VNNI and SDOT kernels) keep it
    // at (k / 4) * 4r + 4i + k % 4; AMX panels (x86) at i * (K rounded up to 64) + k.
    let (r, k4) = if let Some(format) = value.fact.format.downcast_ref::<PackedI8K4>() {
        (format.r, true)
    } else {
        #[cfg(target_arch = "x86_64")]
        let amx = value.fact.format.downcast_ref::<tract_linalg::x86_64::amx::PackedAmxA>().map(|f| (f.r, false));
        #[cfg(not(target_arch = "x86_64"))]
        let amx = None;
        let Some(amx) = amx else { return Ok(None) };
        amx
    };
    if value.fact.k != k || value.panel_bytes < r * k || value.mn == 0 {
        return Ok(None);
    }
    let row_len = k.div_ceil(64) * 64;
    let offset = |k: usize, row: usize| if k4 { k4_offset(r, k, row) } else { row * row_len + k };
    let old = value.packed.as_bytes();
    let mut new = old.to_vec();
    for (old_panel, new_panel) in old.chunks(value.panel_bytes).zip(new.chunks_mut(value.panel_bytes)) {
        for (tap, channel) in (0..taps).flat_map(|t| (0..channels).map(move |c| (t, c))) {
            let (from, to) = (channel * taps + tap, tap * channels + channel);
            for row in 0..r {
                new_panel[offset(to, row)] = old_panel[offset(from, row)];
            }
        }
    }
    let permuted = EagerPackedInput {
        fact: value.fact.clone(),
        packed: Arc::new(Blob::from_bytes_alignment(&new, value.packed.layout().align())?),
        panel_bytes: value.panel_bytes,
        mn: value.mn,
    };
    let storage =
        PackedMatrixStorage::new_batched(storage.batch_shape(), tvec![Box::new(permuted) as Box<dyn MMMInputValue>]);
    Ok(Some(storage.into_tensor(weights.datum_type())))
}

impl Op for Im2ColK4 {
    fn name(&self) -> StaticName {
        "Im2colK4".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Im2ColK4 {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("Im2colK4 takes an input")?;
        ensure!(input.datum_type() == self.datum_type, "Im2colK4 input is {:?}", input.datum_type());
        let g = &self.geometry;
        let bytes = input.as_bytes();
        ensure!(bytes.len() == g.channels * g.input[0] * g.input[1], "Im2colK4 input has shape {:?}", input.shape());
        // The second input, when present, is the zero point that fills the padding.
        let pad = match inputs.get(1) {
            Some(pad) => *pad.as_bytes().first().context("Im2colK4 pad value is empty")?,
            None => 0,
        };
        let (n, r) = (g.n(), self.format.r);
        let panel_len = self.panel_len();
        let fill = |packed: &mut [u8]| {
            // The kernel also reads the last panel's spare columns: zero them.
            if n % r != 0 {
                packed[(n / r) * panel_len..].fill(0);
            }
            match &self.order {
                KOrder::ChannelMajor { groups, tail } => {
                    let padded = self.pad_input(bytes, pad);
                    crate::simd::with_avx2!(self.pack(&padded, groups, tail, packed))
                }
                KOrder::TapMajor { taps } => {
                    let quads = crate::simd::with_avx2!(self.interleave_input(bytes, pad));
                    crate::simd::with_avx2!(self.pack_tap_major(&quads, taps, packed))
                }
            }
        };
        // SAFETY: `fill` writes every byte: `pack` and `pack_tap_major` write columns 0..n of every
        // panel, K padding lanes included (tap-major K has none), and the spare columns are zeroed
        // above.
        let value = unsafe { super::pack_k4::packed_matrix(&self.format, self.datum_type, g.k(), n, fill)? };
        let packed = PackedMatrixStorage::new_batched(&[1, 1], tvec![value]).into_tensor(self.datum_type);
        Ok(tvec!(packed.into_tvalue()))
    }
}

impl TypedOp for Im2ColK4 {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = &self.geometry;
        let packed = PackedExoticFact { format: Box::new(self.format.clone()), k: g.k(), mn: g.n().to_dim() };
        Ok(tvec!(self.datum_type.fact([1, 1]).with_exotic_fact(packed)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::super::pack_k4::packed_bytes;
    use super::*;
    use tract_linalg::MmmDispatch;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    /// A runnable matmul kernel of this machine with a K=4-inner activation packing, if any.
    fn k4_kernel() -> Option<(Box<dyn tract_linalg::mmm::MatMatMul>, usize)> {
        MmmDispatch::native().runnable().iter().find_map(|mmm| {
            let packing = mmm.packings().iter().position(|(_, b)| b.downcast_ref::<PackedI8K4>().is_some())?;
            Some((mmm.clone(), packing))
        })
    }

    struct Case {
        channels: usize,
        input: [usize; 2],
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        padding: PaddingSpec,
        pad_value: Option<i8>,
    }

    /// Runs tract's `Im2Col` and ours on the same bytes and compares the packed matrices.
    fn assert_same_as_tract(case: Case, seed: u64) {
        let Some((mmm, packing)) = k4_kernel() else {
            eprintln!("no K=4-inner int8 kernel on this CPU: nothing to compare against");
            return;
        };
        let spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: case.kernel.iter().copied().collect(),
            padding: case.padding,
            dilations: Some(case.dilations.iter().copied().collect()),
            strides: Some(case.strides.iter().copied().collect()),
            input_channels: case.channels,
            output_channels: 8,
        };
        let shape = [1, case.channels, case.input[0], case.input[1]];
        let fact = i8::fact(shape);
        let k = case.channels * case.kernel[0] * case.kernel[1];
        let tract_op = Im2Col::new(spec, 1, k, &fact.shape, mmm, packing).expect("tract's Im2Col");
        let tract_output = tract_op.output_facts(&[&fact]).expect("facts").remove(0);
        let ours = Im2ColK4::replacing(&tract_op, &fact, &tract_output).expect("geometry is covered");

        let mut state = seed;
        let values: Vec<i8> = (0..shape.iter().product::<usize>())
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 56) as i8
            })
            .collect();
        let mut inputs = tvec![Tensor::from_shape(&shape, &values).expect("input").into_tvalue()];
        if let Some(pad) = case.pad_value {
            inputs.push(tensor0(pad).into_tvalue());
        }
        let expected = tract_op.eval(&EvalContext::out_of_plan(), inputs.clone()).expect("tract eval").remove(0);
        let actual = ours.eval(&EvalContext::out_of_plan(), inputs).expect("our eval").remove(0);
        assert_eq!(actual.shape(), expected.shape());
        let (expected, actual) = (packed_bytes(&expected), packed_bytes(&actual));
        assert_eq!((actual.1, actual.2), (expected.1, expected.2), "panel bytes, columns");
        assert_eq!(actual.0.len(), expected.0.len(), "packed length");
        let first_difference = actual.0.iter().zip(&expected.0).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "packed bytes differ");
    }

    /// Where byte (k, column) lies in a `PackedI8K4` matrix with `r` columns per panel.
    fn packed_index(panel_bytes: usize, r: usize, k: usize, column: usize) -> usize {
        (column / r) * panel_bytes + k4_offset(r, k, column % r)
    }

    fn packed_at(bytes: &[u8], panel_bytes: usize, r: usize, k: usize, column: usize) -> u8 {
        bytes[packed_index(panel_bytes, r, k, column)]
    }

    /// Tap-major im2col against tract's: the same matrix with K rows reordered, for every
    /// DenseNet row width, a stride and a dilation.
    #[test]
    fn tap_major_is_tracts_matrix_with_k_reordered() {
        let Some((mmm, packing)) = k4_kernel() else {
            eprintln!("no K=4-inner int8 kernel on this CPU: nothing to compare against");
            return;
        };
        let r = mmm.packings()[packing].1.r();
        // Input size, strides, dilations, padding.
        type TapCase = ([usize; 2], [usize; 2], [usize; 2], PaddingSpec);
        let cases: [TapCase; 6] = [
            ([32, 32], [1, 1], [1, 1], PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
            ([16, 16], [1, 1], [1, 1], PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
            ([8, 8], [1, 1], [1, 1], PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
            ([4, 4], [1, 1], [1, 1], PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
            ([7, 5], [2, 1], [1, 2], PaddingSpec::Explicit(tvec![2, 0], tvec![1, 3])),
            ([6, 9], [1, 1], [1, 1], PaddingSpec::Valid),
        ];
        for (seed, (input, strides, dilations, padding)) in cases.into_iter().enumerate() {
            let channels = 8;
            let spec = PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding,
                dilations: Some(dilations.iter().copied().collect()),
                strides: Some(strides.iter().copied().collect()),
                input_channels: channels,
                output_channels: 8,
            };
            let shape = [1, channels, input[0], input[1]];
            let fact = i8::fact(shape);
            let (taps, k) = (9, channels * 9);
            let tract_op = Im2Col::new(spec, 1, k, &fact.shape, mmm.clone(), packing).expect("tract's Im2Col");
            let tract_output = tract_op.output_facts(&[&fact]).expect("facts").remove(0);
            let ours = Im2ColK4::replacing(&tract_op, &fact, &tract_output).expect("geometry is covered");
            let ours = ours.tap_major().expect("8 channels, 9 taps");
            assert_eq!(ours.channels_and_taps(), (channels, taps));
            let mut state = seed as u64 + 40;
            let values: Vec<i8> = (0..shape.iter().product::<usize>())
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 56) as i8
                })
                .collect();
            let inputs =
                tvec![Tensor::from_shape(&shape, &values).expect("input").into_tvalue(), tensor0(-7i8).into_tvalue()];
            let expected = tract_op.eval(&EvalContext::out_of_plan(), inputs.clone()).expect("tract eval").remove(0);
            let actual = ours.eval(&EvalContext::out_of_plan(), inputs).expect("our eval").remove(0);
            let (expected, actual) = (packed_bytes(&expected), packed_bytes(&actual));
            assert_eq!((actual.1, actual.2, actual.0.len()), (expected.1, expected.2, expected.0.len()));
            let n = expected.2;
            for column in 0..n.div_ceil(r) * r {
                for (tap, channel) in (0..taps).flat_map(|t| (0..channels).map(move |c| (t, c))) {
                    let want = packed_at(&expected.0, expected.1, r, channel * taps + tap, column);
                    let got = packed_at(&actual.0, actual.1, r, tap * channels + channel, column);
                    assert_eq!(got, want, "case {seed}: column {column}, tap {tap}, channel {channel}");
                }
            }
        }
    }

    #[test]
    fn tap_major_weights_reorders_k_of_every_row() {
        let Some((mmm, packing)) = k4_kernel() else { return };
        let format = mmm.packings()[packing].1.downcast_ref::<PackedI8K4>().expect("K4").clone();
        let (channels, taps, m) = (12, 9, 2 * format.r + 3);
        let k = channels * taps;
        // Distinct-ish bytes: (row, k) -> a value of both.
        let value_at = |row: usize, k: usize| (row * 31 + k * 7) as u8;
        let fill = |bytes: &mut [u8]| {
            bytes.fill(0);
            let panel_bytes = format.single_panel_len(k);
            for row in 0..m {
                for kk in 0..k {
                    bytes[packed_index(panel_bytes, format.r, kk, row)] = value_at(row, kk);
                }
            }
        };
        // SAFETY: `fill` zeroes the whole buffer first.
        let value =
            unsafe { super::super::pack_k4::packed_matrix(&format, i8::datum_type(), k, m, fill) }.expect("packed");
        let weights = PackedMatrixStorage::new(value).into_tensor(i8::datum_type());
        let permuted = tap_major_weights(&weights, channels, taps).expect("permute").expect("a K4 matrix");
        let (bytes, panel_bytes, mn) = packed_bytes(&permuted);
        assert_eq!(mn, m);
        for row in 0..m {
            for (tap, channel) in (0..taps).flat_map(|t| (0..channels).map(move |c| (t, c))) {
                let got = packed_at(&bytes, panel_bytes, format.r, tap * channels + channel, row);
                assert_eq!(got, value_at(row, channel * taps + tap), "row {row}, tap {tap}, channel {channel}");
            }
        }
        // A K that is not channels * taps is left alone.
        assert!(tap_major_weights(&weights, channels, taps + 1).expect("no error").is_none());
    }

    /// The same for weights packed for tract's AMX kernels (a row of K bytes per M index).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tap_major_weights_reorders_k_of_every_amx_row() {
        use tract_linalg::x86_64::amx::PackedAmxA;
        let (channels, taps, m) = (12, 9, 2 * 16 + 3);
        let k = channels * taps;
        let value_at = |row: usize, k: usize| (row * 31 + k * 7) as u8 as i8;
        let plain = Tensor::from_shape(&[m, k], &(0..m * k).map(|i| value_at(i / k, i % k)).collect::<Vec<i8>>())
            .expect("weights");
        let packed = PackedAmxA::new(16).pack_view(&plain.view(), 1, 0).expect("tract's AMX packing");
        let weights = PackedMatrixStorage::new(packed).into_tensor(i8::datum_type());
        let permuted = tap_major_weights(&weights, channels, taps).expect("permute").expect("an AMX matrix");
        let (bytes, panel_bytes, mn) = packed_bytes(&permuted);
        assert_eq!(mn, m);
        let row_len = k.div_ceil(64) * 64;
        for row in 0..m {
            let at = (row / 16) * panel_bytes + (row % 16) * row_len;
            for (tap, channel) in (0..taps).flat_map(|t| (0..channels).map(move |c| (t, c))) {
                let got = bytes[at + tap * channels + channel] as i8;
                assert_eq!(got, value_at(row, channel * taps + tap), "row {row}, tap {tap}, channel {channel}");
            }
            assert!(bytes[at + k..at + row_len].iter().all(|&b| b == 0), "row {row}'s K padding");
        }
    }

    #[test]
    fn same_bytes_as_tract_for_densenet_3x3_same_padding() {
        let padding = PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]);
        let case = Case {
            channels: 12,
            input: [8, 8],
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            padding,
            pad_value: Some(-128),
        };
        assert_same_as_tract(case, 1);
    }

    #[test]
    fn same_bytes_as_tract_when_k_and_n_leave_partial_blocks() {
        // k = 5 * 9 = 45 (not a multiple of 4), n = 7 * 6 = 42 (not a multiple of any panel width).
        let padding = PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]);
        let case = Case {
            channels: 5,
            input: [7, 6],
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            padding,
            pad_value: Some(3),
        };
        assert_same_as_tract(case, 2);
    }

    #[test]
    fn same_bytes_as_tract_with_strides_dilations_and_asymmetric_padding() {
        let padding = PaddingSpec::Explicit(tvec![2, 0], tvec![1, 3]);
        let case = Case {
            channels: 3,
            input: [11, 9],
            kernel: [2, 3],
            strides: [2, 3],
            dilations: [2, 1],
            padding,
            pad_value: None,
        };
        assert_same_as_tract(case, 3);
        let case = Case {
            channels: 7,
            input: [9, 10],
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            padding: PaddingSpec::SameUpper,
            pad_value: Some(-5),
        };
        assert_same_as_tract(case, 4);
    }

    #[test]
    fn same_bytes_as_tract_without_padding() {
        let case = Case {
            channels: 6,
            input: [5, 5],
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            padding: PaddingSpec::Valid,
            pad_value: None,
        };
        assert_same_as_tract(case, 5);
    }

    #[test]
    fn same_bytes_as_tract_for_every_densenet_row_width() {
        // Output rows of 32, 16, 8 and 4 positions take the vector paths; 5 the scalar one.
        for (seed, width) in [32, 16, 8, 4, 5].into_iter().enumerate() {
            let case = Case {
                channels: 9,
                input: [3, width],
                kernel: [3, 3],
                strides: [1, 1],
                dilations: [1, 1],
                padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                pad_value: Some(3),
            };
            assert_same_as_tract(case, 10 + seed as u64);
        }
    }

    #[test]
    fn same_bytes_as_tract_for_the_densenet_stem() {
        // The stem: 3 channels, 7x7 at stride 2, padding 3; its rows are stored by stride phase,
        // so its runs of 16 output positions are contiguous copies. Also an odd padded width
        // (phases of unequal length) and a dilation that crosses phases.
        let case = Case {
            channels: 3,
            input: [32, 32],
            kernel: [7, 7],
            strides: [2, 2],
            dilations: [1, 1],
            padding: PaddingSpec::Explicit(tvec![3, 3], tvec![3, 3]),
            pad_value: Some(-128),
        };
        assert_same_as_tract(case, 20);
        let case = Case {
            channels: 2,
            input: [13, 37],
            kernel: [3, 3],
            strides: [1, 2],
            dilations: [1, 3],
            padding: PaddingSpec::Explicit(tvec![1, 2], tvec![2, 1]),
            pad_value: Some(9),
        };
        assert_same_as_tract(case, 21);
        // Rows narrower than the stride, starting in the last phase.
        let case = Case {
            channels: 4,
            input: [5, 2],
            kernel: [2, 3],
            strides: [1, 3],
            dilations: [1, 1],
            padding: PaddingSpec::Explicit(tvec![0, 2], tvec![1, 2]),
            pad_value: Some(-1),
        };
        assert_same_as_tract(case, 22);
    }
}
