//! A chain of element-wise ops from one byte to one byte, run as a 256-entry table.
//!
//! In the int8 DenseNet every 1x1 convolution's u8 output goes through dequantize, ReLU,
//! quantize and the offset to i8 before the 3x3 convolution: four passes (1.1 ms per inference
//! on the development machine, `bench --ops`) computing a function of one byte. [`ByteTable`]
//! evaluates tract's own dequantize, quantize and offset ops once, at load time, on all 256
//! input values, and then looks each byte up: 64 at a time with AVX-512 VBMI byte permutes on
//! x86 CPUs that have them, 16 at a time with NEON table lookups on aarch64, one at a time
//! elsewhere.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::OptBinByScalar;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, OffsetU8asI8};

use super::{FastQuantizeU8, Fusion, constant_f32, element_wise, sole_consumer};

/// `output[i] = table[input[i]]` for one-byte tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteTable {
    table: [u8; 256],
    output: DatumType,
}

/// Evaluates `op` out of a plan on one input.
fn eval_one(op: &dyn TypedOp, input: Tensor) -> TractResult<Tensor> {
    let outputs = op.eval_out_of_plan(tvec!(input.into_tvalue()))?.context("op needs a plan to run")?;
    Ok(outputs.into_iter().next().context("op gave no output")?.into_tensor())
}

/// Finds `DequantizeLinearF32` on a one-byte tensor, then optionally a max (or min) with a
/// constant scalar, then [`FastQuantizeU8`], then optionally `OffsetU8asI8`, each the only
/// consumer of the one before.
pub(super) fn find(model: &TypedModel, first: usize) -> TractResult<Option<Fusion<ByteTable>>> {
    use tract_linalg::BinOp;
    let node = &model.nodes[first];
    if node.op_as::<DequantizeLinearF32>().is_none() || node.inputs.len() != 1 {
        return Ok(None);
    }
    let input_type = model.outlet_fact(node.inputs[0])?.datum_type;
    if input_type.size_of() != 1 {
        return Ok(None);
    }
    // The ops after the dequantize, as a function of one f32.
    let mut clamp: Option<(BinOp, f32)> = None;
    let mut current = sole_consumer(model, first);
    if let Some(by_scalar) = current.and_then(|n| n.op_as::<OptBinByScalar>().map(|op| (n, op))) {
        let (n, op) = by_scalar;
        let Some(bound) = constant_f32(model, n.inputs[1])? else { return Ok(None) };
        if n.inputs[0] != OutletId::new(first, 0) || !matches!(op.linalg_op, BinOp::Max | BinOp::Min) {
            return Ok(None);
        }
        clamp = Some((op.linalg_op, bound));
        current = sole_consumer(model, n.id);
    }
    let Some(quantize) = current.filter(|n| element_wise::<FastQuantizeU8>(n).is_some()) else { return Ok(None) };
    let offset = sole_consumer(model, quantize.id).filter(|n| element_wise::<OffsetU8asI8>(n).is_some());
    let last = offset.unwrap_or(quantize);

    // Every input byte, in the input's type, through the same ops.
    let bytes: Vec<u8> = (0..=255).collect();
    // SAFETY: 256 bytes for 256 values of a one-byte type; any bit pattern is a valid byte.
    let all = unsafe { Tensor::from_raw_dt(input_type, &[256], &bytes)? };
    let dequantized = eval_one(&*node.op, all)?;
    let clamped = match clamp {
        None => dequantized,
        Some((op, bound)) => {
            let values = dequantized.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
            // Finite values (a dequantized byte): max and min have one answer.
            ensure!(values.iter().all(|v| v.is_finite()) && bound.is_finite());
            let clamped: Vec<f32> =
                values.iter().map(|&v| if op == BinOp::Max { v.max(bound) } else { v.min(bound) }).collect();
            tensor1(&clamped)
        }
    };
    let mut table_tensor = eval_one(&*quantize.op, clamped)?;
    if let Some(offset) = offset {
        table_tensor = eval_one(&*offset.op, table_tensor)?;
    }
    let table: [u8; 256] = table_tensor.as_bytes().try_into().context("table of 256 bytes")?;
    let output = last.outputs[0].fact.datum_type;
    ensure!(output.size_of() == 1);
    Ok(Some(Fusion { inputs: tvec![node.inputs[0]], last: last.id, op: ByteTable { table, output } }))
}

impl Op for ByteTable {
    fn name(&self) -> StaticName {
        "ByteTable".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ByteTable {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("ByteTable takes an input")?;
        ensure!(input.datum_type().size_of() == 1, "ByteTable input is {:?}", input.datum_type());
        // SAFETY: one-byte values, each written from the table below.
        let mut output = unsafe { Tensor::uninitialized_dt(self.output, input.shape())? };
        look_up(&self.table, input.as_bytes(), output.as_bytes_mut());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for ByteTable {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// `output[i] = table[input[i]]` over the shorter of the two.
pub(super) fn look_up(table: &[u8; 256], input: &[u8], output: &mut [u8]) {
    let len = input.len().min(output.len());
    let (input, output) = (&input[..len], &mut output[..len]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vbmi") && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512 VBMI and BW, detected just above.
        unsafe { look_up_avx512vbmi(table, input, output) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    {
        look_up_neon(table, input, output);
        return;
    }
    #[allow(unreachable_code)]
    look_up_scalar(table, input, output)
}

fn look_up_scalar(table: &[u8; 256], input: &[u8], output: &mut [u8]) {
    for (x, y) in input.iter().zip(output) {
        *y = table[usize::from(*x)];
    }
}

/// 64 bytes per step: two 128-entry permutes (`vpermi2b`, indexed by the low 7 bits) for the
/// table's halves, and the byte's top bit picks one. The tail goes through masked loads and stores.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn look_up_avx512vbmi(table: &[u8; 256], input: &[u8], output: &mut [u8]) {
    use std::arch::x86_64::*;
    // SAFETY (all blocks below): every load reads inside `table` (four 64-byte quarters of 256
    // bytes) or `input[start..start + n]`, every store writes `output[start..start + n]`, with
    // n <= 64 and start + n <= len = input.len() = output.len() (sliced by the caller).
    let quarter = |i: usize| unsafe { _mm512_loadu_si512(table.as_ptr().add(64 * i).cast()) };
    let (t0, t1, t2, t3) = (quarter(0), quarter(1), quarter(2), quarter(3));
    let map = |x: __m512i| {
        let low = _mm512_permutex2var_epi8(t0, x, t1);
        let high = _mm512_permutex2var_epi8(t2, x, t3);
        _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), low, high)
    };
    let len = input.len().min(output.len());
    let mut start = 0;
    while start + 64 <= len {
        unsafe {
            let x = _mm512_loadu_si512(input.as_ptr().add(start).cast());
            _mm512_storeu_si512(output.as_mut_ptr().add(start).cast(), map(x));
        }
        start += 64;
    }
    if start < len {
        let mask: __mmask64 = (1u64 << (len - start)) - 1;
        unsafe {
            let x = _mm512_maskz_loadu_epi8(mask, input.as_ptr().add(start).cast());
            _mm512_mask_storeu_epi8(output.as_mut_ptr().add(start).cast(), mask, map(x));
        }
    }
}

/// 16 bytes per step: a 64-entry table lookup (`tbl`) for the first quarter and three
/// lookup-extends (`tbx`, which leave out-of-range lanes as they are) for the others.
#[cfg(target_arch = "aarch64")]
fn look_up_neon(table: &[u8; 256], input: &[u8], output: &mut [u8]) {
    use std::arch::aarch64::*;
    // SAFETY: NEON is part of aarch64; every load reads 64 bytes of `table` or 16 of a 16-byte
    // chunk of `input`, every store writes a 16-byte chunk of `output`.
    unsafe {
        let quarter = |i: usize| vld1q_u8_x4(table.as_ptr().add(64 * i));
        let (t0, t1, t2, t3) = (quarter(0), quarter(1), quarter(2), quarter(3));
        let (step64, step128, step192) = (vdupq_n_u8(64), vdupq_n_u8(128), vdupq_n_u8(192));
        let mut chunks = input.chunks_exact(16).zip(output.chunks_exact_mut(16));
        for (x, y) in chunks.by_ref() {
            let x = vld1q_u8(x.as_ptr());
            let mut r = vqtbl4q_u8(t0, x);
            r = vqtbx4q_u8(r, t1, vsubq_u8(x, step64));
            r = vqtbx4q_u8(r, t2, vsubq_u8(x, step128));
            r = vqtbx4q_u8(r, t3, vsubq_u8(x, step192));
            vst1q_u8(y.as_mut_ptr(), r);
        }
    }
    let done = input.len() / 16 * 16;
    look_up_scalar(table, &input[done..], &mut output[done..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_up_matches_the_scalar_table_at_every_length_and_value() {
        // A table that is not monotone and touches all four quarters.
        let table: [u8; 256] = std::array::from_fn(|i| (i as u8).wrapping_mul(167).wrapping_add(29));
        let input: Vec<u8> = (0..300u32).map(|i| (i * 89 + 7) as u8).chain(0..=255).collect();
        for len in (0..200).chain([255, 256, 300, 555, input.len()]) {
            let mut expected = vec![0u8; len];
            look_up_scalar(&table, &input[..len], &mut expected);
            // The bytes past `len` stay as they were.
            let mut actual = vec![0xA5u8; len + 70];
            look_up(&table, &input[..len], &mut actual[..len]);
            assert_eq!(actual[..len], expected[..], "length {len}");
            assert!(actual[len..].iter().all(|&b| b == 0xA5), "length {len} wrote past the end");
        }
        // Every byte value once, through each lane position.
        let all: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 256];
        look_up(&table, &all, &mut out);
        assert_eq!(out[..], table[..]);
    }
}
