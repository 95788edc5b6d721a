//! [`PackAmxA`]: the activation packing of 1x1 convolutions for tract's AMX int8 kernels
//! (x86 with AMX-INT8, e.g. Sapphire Rapids), in place of tract's `OptMatMulPack`.
//!
//! tract hands the larger of a matmul's M and N to the kernel's A operand, so a 1x1 convolution
//! with more positions than output channels packs its activations as A. The AMX kernels take A as
//! `PackedAmxA`: per panel of `r` positions, each position's K bytes in a row of their own,
//! zero-padded to a multiple of 64 (what one `tileloadd` row reads). The activations hold each
//! channel's positions contiguously, so this is a byte transpose. tract's packer zeroes the
//! panels and then copies one byte at a time through strided reads: about 3 ms of the int8
//! DenseNet's 14-19 ms inference on a Sapphire Rapids VM (`bench --ops`, 21 matmuls). Here each
//! 16 channels x 16 positions block is transposed in SSE2 registers (four rounds of unpacks) and
//! stored as 16 rows of 16 bytes; only the padding is zeroed.

use tract_linalg::mmm::{EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::pack::PackedI8K4;
use tract_linalg::x86_64::amx::PackedAmxA;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};

use super::PackK4;
use super::pack_k4::{ActivationLayout, k4_offset};

/// Replacement for tract's `OptMatMulPack` of 8-bit matrices whose MN axis is contiguous, packed
/// as `PackedAmxA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackAmxA {
    format: PackedAmxA,
    k: usize,
    mn: usize,
    /// Input distance between consecutive K rows.
    k_stride: usize,
    /// Offset in the input of each matrix of the batch (row-major over the other axes).
    matrix_offsets: Vec<usize>,
    output: TypedFact,
}

impl PackAmxA {
    /// The replacement for `op` reading `input`, when it covers the case; `None` leaves tract's op.
    pub fn replacing(op: &OptMatMulPack, input: &TypedFact, output: &TypedFact) -> Option<Self> {
        let layout = ActivationLayout::of(op, input, output)?;
        let format = layout.packer.downcast_ref::<PackedAmxA>()?.clone();
        let ActivationLayout { k, mn, k_stride, matrix_offsets, .. } = layout;
        Some(PackAmxA { format, k, mn, k_stride, matrix_offsets, output: output.clone() })
    }

    /// The same matrices packed `PackedI8K4` with the same panel width: the AMX kernels' B format,
    /// for a matmul turned so that these activations are its B operand ([`super::amx_row_stores`]).
    pub(super) fn as_k4(&self) -> PackK4 {
        let format = PackedI8K4::new(self.format.r);
        let packed = DynPackedExoticFact {
            k: self.k.to_dim(),
            mn: self.mn.to_dim(),
            packers: vec![Box::new(format.clone()) as Box<dyn MMMInputFormat>],
        };
        let output = TypedFact { exotic_fact: None, ..self.output.clone() }.with_exotic_fact(packed);
        PackK4::strided(format, self.k, self.mn, self.k_stride, self.matrix_offsets.clone(), output)
    }

    /// Bytes of one position's row: K rounded up to the 64 bytes a tile row reads.
    fn row_len(&self) -> usize {
        self.k.div_ceil(64) * 64
    }

    /// Packs the `k` x `mn` matrix of `input` at `offset` into `packed` (every byte written).
    fn pack(&self, input: &[u8], offset: usize, packed: &mut [u8]) {
        let (r, k, row_len) = (self.format.r, self.k, self.row_len());
        for (panel_index, panel) in packed.chunks_exact_mut(r * row_len).enumerate() {
            let first = panel_index * r;
            let positions = r.min(self.mn - first);
            let mut k0 = 0;
            if positions % 16 == 0 {
                // Whole 16x16 blocks; the bounds are checked once per block.
                while k0 + 16 <= k {
                    for p0 in (0..positions).step_by(16) {
                        let start = offset + k0 * self.k_stride + first + p0;
                        let source = &input[start..start + 15 * self.k_stride + 16];
                        let target = &mut panel[p0 * row_len + k0..][..15 * row_len + 16];
                        transpose_16x16(source, self.k_stride, target, row_len);
                    }
                    k0 += 16;
                }
            }
            for position in 0..positions {
                let row = &mut panel[position * row_len..][..row_len];
                for (kk, byte) in row[..k].iter_mut().enumerate().skip(k0) {
                    *byte = input[offset + kk * self.k_stride + first + position];
                }
                row[k..].fill(0);
            }
            // The kernel also reads the last panel's spare rows.
            panel[positions * row_len..].fill(0);
        }
    }

    /// One packed matrix as tract's matmul reads it.
    fn packed_matrix(&self, datum_type: DatumType, input: &[u8], offset: usize) -> TractResult<Box<dyn MMMInputValue>> {
        let panel_len = self.format.single_panel_len(self.k);
        let panels = self.mn.div_ceil(self.format.r);
        // SAFETY: `pack` writes every byte (padding and spare rows as 0) before anything reads.
        let mut data =
            unsafe { Tensor::uninitialized_aligned_dt(datum_type, &[panels * panel_len], self.format.alignment())? };
        self.pack(input, offset, data.as_bytes_mut());
        Ok(Box::new(EagerPackedInput {
            fact: PackedExoticFact { format: Box::new(self.format.clone()), k: self.k, mn: self.mn.to_dim() },
            packed: data.into_blob()?.into(),
            panel_bytes: panel_len,
            mn: self.mn,
        }))
    }
}

/// Packed weights `weights` (a constant `PackedI8K4` matrix, as tract packs a convolution's weights
/// for the B side of its AMX kernel) repacked as `PackedAmxA` with the same panel width, for the
/// A side; `None` when they are not such a matrix. Byte `(k, row i)` of a panel moves from
/// `(k / 4) * 4r + 4i + k % 4` to `i * (K rounded up to 64) + k`; the K padding is 0.
pub fn amx_weights(weights: &dyn MMMInputValue) -> TractResult<Option<EagerPackedInput>> {
    let Some(value) = weights.downcast_ref::<EagerPackedInput>() else { return Ok(None) };
    let Some(k4) = value.fact.format.downcast_ref::<PackedI8K4>() else { return Ok(None) };
    let (k, mn, r) = (value.fact.k, value.mn, k4.r);
    if mn == 0 || value.panel_bytes != k4.single_panel_len(k) {
        return Ok(None);
    }
    let amx = PackedAmxA::new(r);
    let panel_len = amx.single_panel_len(k);
    let row_len = panel_len / r;
    let old = value.packed.as_bytes();
    let mut new = vec![0u8; mn.div_ceil(r) * panel_len];
    for (old_panel, new_panel) in old.chunks(value.panel_bytes).zip(new.chunks_mut(panel_len)) {
        for (i, row) in new_panel.chunks_exact_mut(row_len).enumerate() {
            for (kk, byte) in row[..k].iter_mut().enumerate() {
                *byte = old_panel[k4_offset(r, kk, i)];
            }
        }
    }
    let alignment = amx.alignment();
    Ok(Some(EagerPackedInput {
        fact: PackedExoticFact { format: Box::new(amx), k, mn: mn.to_dim() },
        packed: Arc::new(Blob::from_bytes_alignment(&new, alignment)?),
        panel_bytes: panel_len,
        mn,
    }))
}

/// Writes the transpose of a 16x16 byte block: row `i` of `source` (16 bytes at `i *
/// source_stride`) becomes column `i` of `target` (whose rows are `target_stride` apart).
#[inline(always)]
fn transpose_16x16(source: &[u8], source_stride: usize, target: &mut [u8], target_stride: usize) {
    assert!(source.len() >= 15 * source_stride + 16 && target.len() >= 15 * target_stride + 16);
    // SAFETY: SSE2 is part of x86_64; the assert above keeps every 16-byte load and store in
    // bounds.
    unsafe { transpose_16x16_sse2(source.as_ptr(), source_stride, target.as_mut_ptr(), target_stride) }
}

#[inline(always)]
unsafe fn transpose_16x16_sse2(source: *const u8, source_stride: usize, target: *mut u8, target_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees 16 readable rows of 16 bytes at `source` and 16
    // writable ones at `target`.
    unsafe {
        let a: [__m128i; 16] = std::array::from_fn(|i| _mm_loadu_si128(source.add(i * source_stride).cast()));
        // b[i]: rows 2i and 2i+1 byte-interleaved, columns 0..8; b[8 + i]: columns 8..16.
        let b: [__m128i; 16] = std::array::from_fn(|i| {
            if i < 8 {
                _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1])
            } else {
                _mm_unpackhi_epi8(a[2 * (i - 8)], a[2 * (i - 8) + 1])
            }
        });
        for quarter in 0..4 {
            // Rows 4g..4g+4 of columns 4 * quarter .. + 4, one 32-bit lane per column.
            let half = if quarter < 2 { 0 } else { 8 };
            let g: [__m128i; 4] = std::array::from_fn(|group| {
                let (x, y) = (b[half + 2 * group], b[half + 2 * group + 1]);
                if quarter % 2 == 0 { _mm_unpacklo_epi16(x, y) } else { _mm_unpackhi_epi16(x, y) }
            });
            // Rows 0..8 and 8..16 of columns (c, c + 1) and (c + 2, c + 3).
            let low = [_mm_unpacklo_epi32(g[0], g[1]), _mm_unpacklo_epi32(g[2], g[3])];
            let high = [_mm_unpackhi_epi32(g[0], g[1]), _mm_unpackhi_epi32(g[2], g[3])];
            let columns = [
                _mm_unpacklo_epi64(low[0], low[1]),
                _mm_unpackhi_epi64(low[0], low[1]),
                _mm_unpacklo_epi64(high[0], high[1]),
                _mm_unpackhi_epi64(high[0], high[1]),
            ];
            for (c, column) in columns.into_iter().enumerate() {
                _mm_storeu_si128(target.add((4 * quarter + c) * target_stride).cast(), column);
            }
        }
    }
}

impl Op for PackAmxA {
    fn name(&self) -> StaticName {
        "PackAmxA".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PackAmxA {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("PackAmxA takes an input")?;
        let datum_type = self.output.datum_type;
        ensure!(input.datum_type() == datum_type, "PackAmxA input is {:?}", input.datum_type());
        let bytes = input.as_bytes();
        let last = self.matrix_offsets.iter().max().copied().unwrap_or(0);
        ensure!(
            bytes.len() >= last + (self.k - 1) * self.k_stride + self.mn,
            "PackAmxA input has shape {:?}",
            input.shape()
        );
        let values = self
            .matrix_offsets
            .iter()
            .map(|&offset| self.packed_matrix(datum_type, bytes, offset))
            .collect::<TractResult<TVec<_>>>()?;
        let shape: TVec<usize> = self.output.shape.as_concrete().context("PackAmxA output shape")?.into();
        let packed = PackedMatrixStorage::new_batched(&shape, values).into_tensor(datum_type);
        Ok(tvec!(packed.into_tvalue()))
    }
}

impl TypedOp for PackAmxA {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.clone()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::super::pack_k4::random_bytes;
    use super::*;

    /// The repacked weights are tract's own `PackedAmxA` packing of the same matrix, for K not a
    /// multiple of 4 or 64 and a partial last panel.
    #[test]
    fn amx_weights_are_tracts_amx_packing_of_the_same_matrix() {
        use tract_linalg::mmm::MMMInputFormat;
        for (k, mn, seed) in [(128, 32, 1), (147, 21, 2), (64, 16, 3), (5, 3, 4)] {
            let values = random_bytes(k * mn, seed);
            let matrix = Tensor::from_shape(&[k, mn], &values).expect("matrix");
            let pack = |format: &dyn MMMInputFormat| format.prepare_one(&matrix, 0, 1).expect("tract packs");
            let k4 = pack(&PackedI8K4::new(16));
            let expected = pack(&PackedAmxA::new(16));
            let expected = expected.downcast_ref::<EagerPackedInput>().expect("eager");
            let repacked = amx_weights(&*k4).expect("repack").expect("a K4 matrix");
            assert_eq!((repacked.k(), repacked.mn(), repacked.panel_bytes), (k, mn, expected.panel_bytes));
            assert!(repacked.format().dyn_eq(expected.format()), "format");
            let panels = mn.div_ceil(16);
            let real = |bytes: &[u8]| -> Vec<u8> {
                // Rows past MN in the last panel are never read into an output; compare the rest.
                bytes
                    .chunks(expected.panel_bytes)
                    .enumerate()
                    .flat_map(|(p, panel)| {
                        let rows = 16.min(mn - p * 16);
                        panel[..rows * expected.panel_bytes / 16].to_vec()
                    })
                    .collect()
            };
            assert_eq!(repacked.packed.len(), panels * expected.panel_bytes);
            assert_eq!(real(repacked.packed.as_bytes()), real(expected.packed.as_bytes()), "k {k} mn {mn}");
        }
    }

    /// tract's packer on each image row of a [1, k, rows, mn] input.
    fn tract_pack(k: usize, rows: usize, mn: usize, r: usize, values: &[i8]) -> Vec<Vec<u8>> {
        let tensor = Tensor::from_shape(&[1, k, rows, mn], values).expect("input");
        (0..rows)
            .map(|row| {
                let slice = tensor.slice(2, row, row + 1).expect("row");
                let packed = PackedAmxA::new(r).pack_view(&slice.view(), 1, 3).expect("tract pack");
                packed.downcast_ref::<EagerPackedInput>().expect("eager").packed.as_bytes().to_vec()
            })
            .collect()
    }

    fn our_pack(k: usize, rows: usize, mn: usize, r: usize, values: &[i8]) -> Vec<Vec<u8>> {
        let op = PackAmxA {
            format: PackedAmxA::new(r),
            k,
            mn,
            k_stride: rows * mn,
            matrix_offsets: (0..rows).map(|row| row * mn).collect(),
            output: i8::fact([1, rows]),
        };
        let input = Tensor::from_shape(&[1, k, rows, mn], values).expect("input");
        let output = op.eval(&EvalContext::out_of_plan(), tvec![input.into_tvalue()]).expect("eval").remove(0);
        let storage = output.try_storage_as::<PackedMatrixStorage>().expect("packed storage");
        (0..rows)
            .map(|row| {
                let value = storage.value_at_flat(row).downcast_ref::<EagerPackedInput>().expect("eager");
                assert_eq!((value.mn, value.panel_bytes), (mn, PackedAmxA::new(r).single_panel_len(k)));
                value.packed.as_bytes().to_vec()
            })
            .collect()
    }

    #[test]
    fn same_bytes_as_tracts_packer() {
        // DenseNet's shapes at 128x128 (K 64..1024 by 32, 1024 and 256 positions) and odd ones:
        // K not a multiple of 16 or 64, partial panels, the 8-row kernel's panels, batches.
        let cases = [(64, 1, 1024, 16), (96, 1, 256, 16), (256, 1, 64, 16), (130, 2, 48, 16), (7, 1, 40, 16)];
        let more = [(33, 2, 20, 8), (16, 1, 16, 16), (200, 1, 3, 16), (48, 3, 32, 8), (1, 1, 1, 16)];
        for (seed, (k, rows, mn, r)) in cases.into_iter().chain(more).enumerate() {
            let values = random_bytes(k * rows * mn, seed as u64 + 1);
            assert_eq!(
                our_pack(k, rows, mn, r, &values),
                tract_pack(k, rows, mn, r, &values),
                "k {k} rows {rows} mn {mn} r {r}"
            );
        }
    }

    #[test]
    fn transposes_a_block() {
        let source: Vec<u8> = (0..16 * 20).map(|i| i as u8).collect();
        let mut target = vec![0u8; 16 * 24];
        transpose_16x16(&source, 20, &mut target, 24);
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(target[j * 24 + i], source[i * 20 + j], "row {i} column {j}");
            }
        }
    }
}
