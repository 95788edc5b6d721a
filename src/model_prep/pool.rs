//! Max and average pooling of channels-first f32 maps, vectorised across output columns.
//!
//! tract's `OptMaxPool` and `OptSumPool` walk every output through a generic patch visitor
//! (DenseNet's stem max pool 0.23 ms, its three transition average pools 0.14 ms per inference on
//! the development machine, `bench --ops`). [`FastPool`] splits each input row by stride phase
//! once, so each kernel tap is a contiguous run over the output row, and folds the taps in
//! tract's order (kernel rows, then columns) with tract's operation: `if acc < v { v } else { acc }`
//! from `f32::MIN` for max (a tap in the padding never changes it, so it is skipped), and the sum
//! from `Iterator::sum`'s start value times `1 / taps` for average. The results are the same bits.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::OptMaxPool;
use tract_onnx::tract_core::ops::cnn::OptSumPool;
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    /// Sum of the window's taps times `1 / taps` (no padding, so every window is whole).
    Average,
}

/// One axis of the pooling window: input length, output length, kernel, stride, padding before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolAxis {
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    pad_before: usize,
}

impl PoolAxis {
    /// Input index of output `o`'s tap `k`, if it is inside the input (not padding).
    fn source(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.stride + k).checked_sub(self.pad_before).filter(|&i| i < self.input)
    }
}

/// A 2-D pool over `planes` contiguous `[height, width]` f32 planes (batch times channels), or
/// u8 planes for a max pool made by [`FastPool::on_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FastPool {
    kind: PoolKind,
    planes: usize,
    rows: PoolAxis,
    columns: PoolAxis,
    /// u8 values instead of f32 (max pools only).
    bytes: bool,
}

impl FastPool {
    /// The replacement for tract's max pool, when the input is a concrete NCHW or CHW f32 map
    /// with two spatial axes, no dilation and no index output.
    pub fn replacing_max(op: &OptMaxPool, input: &TypedFact) -> Option<FastPool> {
        if op.with_index_outputs.is_some() {
            return None;
        }
        Self::new(PoolKind::Max, &op.pool_spec, input)
    }

    /// The replacement for tract's average pool, when it is unpadded and normalised (so every
    /// window has all its taps and the divisor is the kernel size), on the same maps as above.
    pub fn replacing_average(op: &OptSumPool, input: &TypedFact) -> Option<FastPool> {
        if !op.normalize {
            return None;
        }
        let pool = Self::new(PoolKind::Average, &op.pool_spec, input)?;
        let unpadded =
            |axis: &PoolAxis| axis.pad_before == 0 && (axis.output - 1) * axis.stride + axis.kernel <= axis.input;
        (unpadded(&pool.rows) && unpadded(&pool.columns)).then_some(pool)
    }

    fn new(kind: PoolKind, spec: &PoolSpec, input: &TypedFact) -> Option<FastPool> {
        let shape = input.shape.as_concrete()?;
        let batch = match (spec.data_format, shape.len()) {
            (DataFormat::NCHW, 4) => shape[0],
            (DataFormat::CHW, 3) => 1,
            _ => return None,
        };
        let (channels, height, width) = (shape[shape.len() - 3], shape[shape.len() - 2], shape[shape.len() - 1]);
        if input.datum_type != f32::datum_type() || spec.rank() != 2 || spec.dilations().iter().any(|&d| d != 1) {
            return None;
        }
        if spec.input_channels != channels || spec.output_channels != channels {
            return None;
        }
        if !matches!(spec.padding, PaddingSpec::Valid | PaddingSpec::ExplicitOnnxPool(..) | PaddingSpec::Explicit(..)) {
            return None;
        }
        let computed = spec.computed_padding(&[height, width]);
        let axis = |i: usize, input: usize| PoolAxis {
            input,
            output: computed[i].convoluted,
            kernel: spec.kernel_shape[i],
            stride: spec.stride(i),
            pad_before: computed[i].pad_before,
        };
        let (rows, columns) = (axis(0, height), axis(1, width));
        let valid = |a: &PoolAxis| a.output > 0 && a.kernel > 0 && a.stride > 0;
        if rows.kernel * columns.kernel > MAX_TAPS {
            return None;
        }
        (valid(&rows) && valid(&columns)).then_some(FastPool {
            kind,
            planes: batch * channels,
            rows,
            columns,
            bytes: false,
        })
    }

    /// This max pool on the u8 values that a dequantize with a positive scale turns into its f32
    /// input, for when the pool moves before the dequantize ([`super::pool_bytes`]): a
    /// dequantize `(q - zero_point) * scale` with `scale > 0` never reverses an order, so the
    /// max of the dequantized values is the dequantized max, the same bits. Padding stays
    /// absent (it reads as 0, the least byte, where f32 uses `f32::MIN`), which is only the
    /// same where every window has a tap inside the input: required here.
    pub fn on_bytes(&self) -> Option<FastPool> {
        let covered = |axis: &PoolAxis| (0..axis.output).all(|o| (0..axis.kernel).any(|k| axis.source(o, k).is_some()));
        (self.kind == PoolKind::Max && !self.bytes && covered(&self.rows) && covered(&self.columns))
            .then(|| FastPool { bytes: true, ..self.clone() })
    }

    fn datum_type(&self) -> DatumType {
        if self.bytes { u8::datum_type() } else { f32::datum_type() }
    }

    /// Entries per stride phase of a split row: the output columns rounded up to whole groups of
    /// `LANES` plus the kernel's reach (so every group's taps are in the run), and at least
    /// every input column.
    fn phase_len<const LANES: usize>(&self) -> usize {
        let c = self.columns;
        (c.output.next_multiple_of(LANES) + (c.kernel - 1) / c.stride).max((c.input + c.pad_before).div_ceil(c.stride))
    }

    fn run(&self, input: &[f32], output: &mut [f32]) {
        // As tract: max folds `if acc < v { v } else { acc }` from `f32::MIN`; average sums
        // from `Iterator::sum`'s start value and multiplies by `1 / taps`.
        let max = |a: f32, v: f32| if a < v { v } else { a };
        match self.kind {
            PoolKind::Max => crate::simd::with_avx2!(self.run_portable::<F32_LANES, f32>(
                input,
                output,
                f32::MIN,
                f32::MIN,
                max,
                |a| a
            )),
            PoolKind::Average => {
                let (start, divisor) =
                    (std::iter::empty::<f32>().sum(), ((self.rows.kernel * self.columns.kernel) as f32).recip());
                crate::simd::with_avx2!(self.run_portable::<F32_LANES, f32>(
                    input,
                    output,
                    0.0,
                    start,
                    |a, v| a + v,
                    |a| a * divisor
                ))
            }
        }
    }

    /// The max pool on bytes ([`FastPool::on_bytes`]).
    fn run_bytes(&self, input: &[u8], output: &mut [u8]) {
        crate::simd::with_avx2!(self.run_portable::<BYTE_LANES, u8>(input, output, 0, 0, |a, v| a.max(v), |a| a))
    }

    /// Each output is `finish` of `fold` over its taps from `start`; a tap in the padding (or
    /// past the last output group) reads `absent`, which must leave the fold unchanged. Output
    /// columns go in groups of `LANES` (a vector's worth: [`F32_LANES`], [`BYTE_LANES`]), each
    /// group folding all its taps in registers.
    #[inline(always)]
    fn run_portable<const LANES: usize, T: Copy>(
        &self,
        input: &[T],
        output: &mut [T],
        absent: T,
        start: T,
        fold: impl Fn(T, T) -> T,
        finish: impl Fn(T) -> T,
    ) {
        let (rows, columns) = (self.rows, self.columns);
        let (plane_in, plane_out) = (rows.input * columns.input, rows.output * columns.output);
        let (stride, phase_len) = (columns.stride, self.phase_len::<LANES>());
        // Every input row of a plane, split by stride phase: `split[(row * stride + phase) *
        // phase_len + j]` is padded column `j * stride + phase`, so tap `k` of output column
        // `o` is entry `o + k / stride` of phase `k % stride`.
        let mut split = vec![absent; rows.input * stride * phase_len];
        for (plane, out_plane) in input.chunks_exact(plane_in).zip(output.chunks_exact_mut(plane_out)) {
            for (row, values) in plane.chunks_exact(columns.input).enumerate() {
                let split_row = &mut split[row * stride * phase_len..(row + 1) * stride * phase_len];
                match stride {
                    1 => split_by_phase::<1, T>(values, columns.pad_before, phase_len, split_row),
                    2 => split_by_phase::<2, T>(values, columns.pad_before, phase_len, split_row),
                    _ => {
                        for (c, &v) in values.iter().enumerate() {
                            let padded = c + columns.pad_before;
                            split_row[(padded % stride) * phase_len + padded / stride] = v;
                        }
                    }
                }
            }
            for (o_row, out_row) in out_plane.chunks_exact_mut(columns.output).enumerate() {
                // Where each tap of this output row starts in `split`, in tract's order.
                let mut taps = [0usize; MAX_TAPS];
                let mut count = 0;
                for k_row in 0..rows.kernel {
                    let Some(row) = rows.source(o_row, k_row) else { continue };
                    for k_col in 0..columns.kernel {
                        taps[count] = (row * stride + k_col % stride) * phase_len + k_col / stride;
                        count += 1;
                    }
                }
                for (group, out) in out_row.chunks_mut(LANES).enumerate() {
                    let mut acc = [start; LANES];
                    for &tap in &taps[..count] {
                        let at = tap + group * LANES;
                        let Some(values) = split.get(at..at + LANES) else { continue };
                        for (a, &v) in acc.iter_mut().zip(values) {
                            *a = fold(*a, v);
                        }
                    }
                    for (y, &a) in out.iter_mut().zip(&acc) {
                        *y = finish(a);
                    }
                }
            }
        }
    }
}

/// The most kernel taps a window may have (checked when the op is made).
const MAX_TAPS: usize = 16;

/// Output columns folded together in registers: an AVX2 vector of f32, of bytes.
const F32_LANES: usize = 8;
const BYTE_LANES: usize = 32;

/// Stores input row `values` into `split` (`STRIDE` runs of `phase_len`) so that padded column
/// `c + pad_before` lands at entry `(c + pad_before) / STRIDE` of run `(c + pad_before) % STRIDE`.
/// A compile-time stride lets the compiler turn the scatter into vector shuffles.
#[inline(always)]
fn split_by_phase<const STRIDE: usize, T: Copy>(values: &[T], pad_before: usize, phase_len: usize, split: &mut [T]) {
    let (chunks, tail) = values.as_chunks::<STRIDE>();
    for i in 0..STRIDE {
        let (run, offset) = ((i + pad_before) % STRIDE * phase_len, (i + pad_before) / STRIDE);
        let run = &mut split[run + offset..run + phase_len];
        run.iter_mut().zip(chunks).for_each(|(s, chunk)| *s = chunk[i]);
        if let (Some(&v), Some(s)) = (tail.get(i), run.get_mut(chunks.len())) {
            *s = v;
        }
    }
}

impl Op for FastPool {
    fn name(&self) -> StaticName {
        match self.kind {
            PoolKind::Max if self.bytes => "FastMaxPoolU8".into(),
            PoolKind::Max => "FastMaxPool".into(),
            PoolKind::Average => "FastAveragePool".into(),
        }
    }

    op_as_typed_op!();
}

impl EvalOp for FastPool {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("FastPool takes an input")?;
        ensure!(
            input.datum_type() == self.datum_type()
                && input.len() == self.planes * self.rows.input * self.columns.input,
            "{} input is {:?} {:?}",
            self.name(),
            input.datum_type(),
            input.shape()
        );
        let plain = input.try_as_plain_ram()?;
        let mut shape: TVec<usize> = input.shape().into();
        let rank = shape.len();
        (shape[rank - 2], shape[rank - 1]) = (self.rows.output, self.columns.output);
        // SAFETY: plain values (f32 or u8), every one written by `run` or `run_bytes` (each
        // output row is stored whole).
        let mut output = unsafe { Tensor::uninitialized_dt(self.datum_type(), &shape)? };
        let mut output_plain = output.try_as_plain_ram_mut()?;
        if self.bytes {
            self.run_bytes(plain.as_slice::<u8>()?, output_plain.as_slice_mut::<u8>()?);
        } else {
            self.run(plain.as_slice::<f32>()?, output_plain.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.clone();
        let rank = shape.len();
        shape.set(rank - 2, self.rows.output.to_dim());
        shape.set(rank - 1, self.columns.output.to_dim());
        Ok(tvec!(self.datum_type().fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;

    fn spec(kernel: usize, stride: usize, padding: PaddingSpec, channels: usize) -> PoolSpec {
        PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![kernel, kernel],
            padding,
            dilations: None,
            strides: Some(tvec![stride, stride]),
            input_channels: channels,
            output_channels: channels,
        }
    }

    /// Values with ties, signed zeros and negatives, so the fold order and operation show.
    fn input(shape: &[usize]) -> Tensor {
        let len = shape.iter().product::<usize>();
        let values: Vec<f32> = (0..len)
            .map(|i| match (i * 7919) % 11 {
                0 => 0.0,
                1 => -0.0,
                2 => 1.0,
                n => ((i * 2_654_435_761) % 1000) as f32 * 0.013 - 6.5 + n as f32 * 1e-3,
            })
            .collect();
        Tensor::from_shape(shape, &values).unwrap()
    }

    fn bits(t: &TValue) -> Vec<u32> {
        t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
    }

    fn check(tract_op: &dyn TypedOp, ours: FastPool, x: Tensor) {
        let expected = tract_op.eval_out_of_plan(tvec!(x.clone().into_tvalue())).unwrap().unwrap();
        let fact = ours.output_facts(&[&f32::fact(x.shape())]).unwrap();
        let got = ours.eval_out_of_plan(tvec!(x.into_tvalue())).unwrap().unwrap();
        assert_eq!(got[0].shape(), expected[0].shape());
        assert_eq!(fact[0].shape.as_concrete().unwrap(), expected[0].shape());
        assert_eq!(bits(&got[0]), bits(&expected[0]), "{ours:?}");
    }

    fn onnx_padding(before: usize, after: usize, ceil: bool) -> PaddingSpec {
        PaddingSpec::ExplicitOnnxPool(tvec![before, before], tvec![after, after], ceil)
    }

    /// Max pool geometries: odd sizes, strides 1 to 3, ceil mode, asymmetric padding.
    fn max_pool_cases() -> [([usize; 4], PoolSpec); 7] {
        [
            // DenseNet's stem: 3x3, stride 2, padding 1 on a 64x64 map.
            ([1, 64, 64, 64], spec(3, 2, onnx_padding(1, 1, false), 64)),
            ([1, 3, 7, 9], spec(3, 2, onnx_padding(1, 1, false), 3)),
            ([2, 2, 8, 8], spec(2, 2, PaddingSpec::Valid, 2)),
            ([1, 2, 9, 9], spec(2, 2, PaddingSpec::Valid, 2)),
            ([1, 4, 6, 5], spec(3, 1, onnx_padding(1, 1, false), 4)),
            ([1, 2, 7, 7], spec(2, 2, onnx_padding(0, 0, true), 2)),
            ([1, 2, 10, 11], spec(3, 3, PaddingSpec::Explicit(tvec![2, 1], tvec![0, 2]), 2)),
        ]
    }

    #[test]
    fn max_pools_match_tract() {
        for (shape, spec) in max_pool_cases() {
            let x = input(&shape);
            let fact = f32::fact(shape);
            let geometry = spec.compute_geo(&fact.shape).unwrap();
            let tract_op = OptMaxPool::new(spec, None, geometry);
            let ours = FastPool::replacing_max(&tract_op, &fact).expect("replaceable");
            check(&tract_op, ours, x);
        }
    }

    /// Pooling the bytes then dequantizing gives the bits of dequantizing then pooling, for the
    /// max pools whose every window has a tap inside the input; the others are not made.
    #[test]
    fn max_pools_on_bytes_match_pools_on_their_dequantized_values() {
        use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;
        for (shape, spec) in max_pool_cases() {
            let len = shape.iter().product::<usize>();
            let q: Vec<u8> = (0..len).map(|i| ((i * 2_654_435_761) % 251) as u8).collect();
            let q = Tensor::from_shape(&shape, &q).unwrap();
            let fact = f32::fact(shape);
            let geometry = spec.compute_geo(&fact.shape).unwrap();
            let pool = FastPool::replacing_max(&OptMaxPool::new(spec, None, geometry), &fact).unwrap();
            let on_bytes = pool.on_bytes().expect("every window has a tap inside");
            for dequantize in [DequantizeLinearF32::new(0.0417, 113), DequantizeLinearF32::new(3.1e-3, 0)] {
                let dequantized = dequantize.eval_out_of_plan(tvec!(q.clone().into_tvalue())).unwrap().unwrap();
                let expected = pool.eval_out_of_plan(dequantized).unwrap().unwrap();
                let pooled = on_bytes.eval_out_of_plan(tvec!(q.clone().into_tvalue())).unwrap().unwrap();
                assert_eq!(pooled[0].datum_type(), u8::datum_type());
                let got = dequantize.eval_out_of_plan(pooled).unwrap().unwrap();
                assert_eq!(bits(&got[0]), bits(&expected[0]), "{on_bytes:?}");
            }
        }
        // Windows wholly in the padding (a 1x1 kernel, stride 2, padding 1): not made on bytes.
        let fact = f32::fact([1, 1, 4, 4]);
        let padded = spec(1, 2, onnx_padding(1, 1, false), 1);
        let geometry = padded.compute_geo(&fact.shape).unwrap();
        let pool = FastPool::replacing_max(&OptMaxPool::new(padded, None, geometry), &fact).unwrap();
        assert!(pool.on_bytes().is_none());
    }

    #[test]
    fn average_pools_match_tract() {
        let cases = [
            // DenseNet's transitions: 2x2, stride 2 on 32x32, 16x16 and 8x8 maps.
            ([1, 128, 32, 32], spec(2, 2, PaddingSpec::Valid, 128)),
            ([1, 8, 8, 8], spec(2, 2, PaddingSpec::Valid, 8)),
            ([2, 3, 9, 7], spec(2, 2, PaddingSpec::Valid, 3)),
            ([1, 3, 9, 9], spec(3, 3, PaddingSpec::Valid, 3)),
            ([1, 2, 6, 6], spec(3, 1, PaddingSpec::Valid, 2)),
        ];
        for (shape, spec) in cases {
            let x = input(&shape);
            let fact = f32::fact(shape);
            let geometry = spec.compute_geo(&fact.shape).unwrap();
            let tract_op = OptSumPool::new(spec, false, true, geometry);
            let ours = FastPool::replacing_average(&tract_op, &fact).expect("replaceable");
            check(&tract_op, ours, x);
        }
    }

    #[test]
    fn padded_or_unnormalised_average_pools_stay_tracts() {
        let fact = f32::fact([1, 2, 8, 8]);
        let padded = spec(3, 2, PaddingSpec::ExplicitOnnxPool(tvec![1, 1], tvec![1, 1], false), 2);
        let geometry = padded.compute_geo(&fact.shape).unwrap();
        assert!(FastPool::replacing_average(&OptSumPool::new(padded, false, true, geometry), &fact).is_none());
        let plain = spec(2, 2, PaddingSpec::Valid, 2);
        let geometry = plain.compute_geo(&fact.shape).unwrap();
        assert!(FastPool::replacing_average(&OptSumPool::new(plain, false, false, geometry), &fact).is_none());
        let index = spec(2, 2, PaddingSpec::Valid, 2);
        let geometry = index.compute_geo(&fact.shape).unwrap();
        let with_index = OptMaxPool::new(index, Some(i64::datum_type()), geometry);
        assert!(FastPool::replacing_max(&with_index, &fact).is_none());
    }
}
