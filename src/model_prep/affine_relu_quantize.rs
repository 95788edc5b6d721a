//! One pass for DenseNet's pre-activation block in front of every quantized convolution:
//! batch norm (a per-channel multiply and add), ReLU, quantize to u8, and the offset to i8 that
//! tract's int8 matmul takes.
//!
//! tract runs these as three ops over the activation (`OptBinChain(Mul+Add+Max)`, the quantize,
//! `OffsetU8asI8`), each reading what the previous one wrote: 3.7 of the 13.6 ms of the int8
//! DenseNet on the development machine (`bench --ops`). [`AffineReluQuantize`] reads the f32
//! activation once and writes the i8 one, with the same float operations in the same order, so
//! the bytes are the same (tested against the three ops).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::OptBinChain;
use tract_onnx::tract_core::ops::quant::OffsetU8asI8;

use super::{FastQuantizeU8, Fusion, element_wise, quantize_u8, sole_consumer};

/// `max(x * scale[c] + shift[c], 0)` quantized (tract's `QuantizeLinearU8` rounding), for
/// each channel `c` of `period` consecutive values; then, if `to_i8`, offset by -128.
#[derive(Debug, Clone)]
pub struct AffineReluQuantize {
    scale: Vec<f32>,
    shift: Vec<f32>,
    period: usize,
    quantize_scale: f32,
    zero_point: u8,
    to_i8: bool,
    output: DatumType,
}

impl PartialEq for AffineReluQuantize {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        bits(&self.scale) == bits(&other.scale)
            && bits(&self.shift) == bits(&other.shift)
            && self.period == other.period
            && self.quantize_scale.to_bits() == other.quantize_scale.to_bits()
            && self.zero_point == other.zero_point
            && self.to_i8 == other.to_i8
            && self.output == other.output
    }
}

impl Eq for AffineReluQuantize {}

/// Finds `OptBinChain(Mul+Add+Max)` (per-channel constants, a constant floor) on a `[1, C, ...]`
/// f32 tensor, followed only by a [`FastQuantizeU8`] and optionally an `OffsetU8asI8`.
pub(super) fn find(model: &TypedModel, chain: usize) -> TractResult<Option<Fusion<AffineReluQuantize>>> {
    use tract_linalg::BinOp;
    let node = &model.nodes[chain];
    let Some(op) = node.op_as::<OptBinChain>() else { return Ok(None) };
    let kinds: Vec<BinOp> = op.steps.iter().map(|s| s.linalg_op).collect();
    if kinds != [BinOp::Mul, BinOp::Add, BinOp::Max] || node.inputs.len() != 4 {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = input.shape.as_concrete() else { return Ok(None) };
    if input.datum_type != f32::datum_type() || shape.len() < 2 || shape[0] != 1 || shape[1] == 0 {
        return Ok(None);
    }
    let (channels, len) = (shape[1], shape.iter().product::<usize>());
    let constant = |i: usize| -> TractResult<Option<Vec<f32>>> {
        let fact = model.outlet_fact(node.inputs[i])?;
        let Some(k) = fact.konst.as_ref().filter(|k| k.datum_type() == f32::datum_type()) else { return Ok(None) };
        Ok(Some(k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
    };
    let (Some(scale), Some(shift), Some(floor)) = (constant(1)?, constant(2)?, constant(3)?) else { return Ok(None) };
    // One value per channel, each applied to a block of `period` values: tract's PerBlock share.
    use tract_linalg::multithread::BShare;
    let per_channel = |v: &[f32], share: BShare| v.len() == channels && (share == BShare::PerBlock || channels == 1);
    // A ReLU: with a floor of 0, NaN (which tract's max may keep or drop) quantizes to the zero
    // point either way.
    if !per_channel(&scale, op.steps[0].share) || !per_channel(&shift, op.steps[1].share) || floor != [0.0] {
        return Ok(None);
    }
    let Some(quantize) = sole_consumer(model, chain) else { return Ok(None) };
    let Some(fast) = element_wise::<FastQuantizeU8>(quantize) else { return Ok(None) };
    let (quantize_scale, zero_point) = (fast.scale, fast.zero_point);
    let offset = sole_consumer(model, quantize.id).filter(|next| element_wise::<OffsetU8asI8>(next).is_some());
    let last = offset.unwrap_or(quantize);
    let output = last.outputs[0].fact.datum_type;
    if output.size_of() != 1 {
        return Ok(None);
    }
    let op = AffineReluQuantize {
        scale,
        shift,
        period: len / channels,
        quantize_scale,
        zero_point,
        to_i8: offset.is_some(),
        output,
    };
    Ok(Some(Fusion { input: node.inputs[0], last: last.id, op }))
}

impl AffineReluQuantize {
    fn run(&self, input: &[f32], output: &mut [u8]) {
        crate::simd::with_avx2!(self.run_portable(input, output))
    }

    #[inline(always)]
    fn run_portable(&self, input: &[f32], output: &mut [u8]) {
        let (zero_point, flip) = (f32::from(self.zero_point), if self.to_i8 { 0x80 } else { 0 });
        for (((x, y), &scale), &shift) in
            input.chunks(self.period).zip(output.chunks_mut(self.period)).zip(&self.scale).zip(&self.shift)
        {
            for (x, y) in x.iter().zip(y.iter_mut()) {
                // As tract's chain: multiply, add, then max (two roundings, no fused multiply-add).
                let v = *x * scale + shift;
                let v = if v > 0.0 { v } else { 0.0 };
                *y = quantize_u8(v, self.quantize_scale, zero_point) ^ flip;
            }
        }
    }
}

impl Op for AffineReluQuantize {
    fn name(&self) -> StaticName {
        "AffineReluQuantize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for AffineReluQuantize {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("AffineReluQuantize takes an input")?;
        let plain = input.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        ensure!(
            values.len() == self.period * self.scale.len(),
            "AffineReluQuantize input has shape {:?}",
            input.shape()
        );
        // SAFETY: one-byte values, all written by `run` (input and output have the same length).
        let mut output = unsafe { Tensor::uninitialized_dt(self.output, input.shape())? };
        self.run(values, output.as_bytes_mut());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for AffineReluQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8;

    /// tract's three steps, one value at a time: multiply, add, max with 0 (f32::max: NaN gives
    /// 0), `QuantizeLinearU8`'s function, then `OffsetU8asI8`'s.
    fn reference(x: f32, scale: f32, shift: f32, quantize_scale: f32, zero_point: u8) -> u8 {
        let v = (x * scale + shift).max(0.0);
        let q = quantize_linear_f32_u8(v, quantize_scale, i32::from(zero_point));
        (q.wrapping_sub(128) as i8) as u8
    }

    fn op(scale: Vec<f32>, shift: Vec<f32>, period: usize, quantize_scale: f32, zero_point: u8) -> AffineReluQuantize {
        AffineReluQuantize { scale, shift, period, quantize_scale, zero_point, to_i8: true, output: i8::datum_type() }
    }

    #[test]
    fn edge_values_match_tracts_steps() {
        let xs = [0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40, 3e38, -3e38];
        let channels = [(1.0, 0.0), (0.37, -0.2), (-2.0, 1.0), (1e-3, 0.5)];
        let (quantize_scale, zero_point) = (1.0 / 0.0235, 0);
        let op =
            op(channels.map(|c| c.0).to_vec(), channels.map(|c| c.1).to_vec(), xs.len(), quantize_scale, zero_point);
        let input: Vec<f32> = channels.iter().flat_map(|_| xs).collect();
        let mut output = vec![0u8; input.len()];
        op.run(&input, &mut output);
        for (i, (x, y)) in input.iter().zip(&output).enumerate() {
            let (scale, shift) = channels[i / xs.len()];
            assert_eq!(
                *y,
                reference(*x, scale, shift, quantize_scale, zero_point),
                "x {x} scale {scale} shift {shift}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_values_match_tracts_steps(
            xs in prop::collection::vec(-1e3f32..1e3, 1..64),
            scale in -4f32..4.0, shift in -4f32..4.0, quantize_scale in 1e-2f32..1e3, zero_point: u8,
        ) {
            let op = op(vec![scale], vec![shift], xs.len(), quantize_scale, zero_point);
            let mut output = vec![0u8; xs.len()];
            op.run(&xs, &mut output);
            for (x, y) in xs.iter().zip(&output) {
                prop_assert_eq!(*y, reference(*x, scale, shift, quantize_scale, zero_point));
            }
        }
    }
}
