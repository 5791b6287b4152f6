//! Arbitrary bytes as a LeNet-5 weights file: either `Err`, or the model takes exactly the
//! floats at the stated byte ranges and saves back to a file that reloads to the same values.
#![no_main]

use convkit::nn::{lenet5, load_safetensors_bytes, safetensors_bytes, Activation, Pooling};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut model = lenet5(Activation::Relu, Pooling::Max, 1).unwrap();
    // Half the runs start from a valid file with some bytes overwritten, so the fuzzer
    // reaches the checks past the header.
    let input = match bytes.split_first() {
        Some((&f, rest)) if f & 1 == 1 => {
            let mut good = safetensors_bytes(&mut model, &[("model", "lenet5")]);
            for pair in rest.chunks(3) {
                if let [hi, lo, v] = *pair {
                    let at = (hi as usize * 256 + lo as usize) % good.len();
                    good[at] = v;
                }
            }
            good
        }
        Some((_, rest)) => rest.to_vec(),
        None => return,
    };
    let before = model.named_params();
    match load_safetensors_bytes(&mut model, &input, "fuzz") {
        Err(_) => {
            // A rejected file leaves the model as it was.
            let after = model.named_params();
            assert!(before.iter().zip(&after).all(|(a, b)| a.1.data() == b.1.data()), "model changed on error");
        }
        Ok(_) => {
            let saved = safetensors_bytes(&mut model, &[]);
            let mut again = lenet5(Activation::Relu, Pooling::Max, 2).unwrap();
            load_safetensors_bytes(&mut again, &saved, "round trip").unwrap();
            for ((_, a), (_, b)) in model.named_params().iter().zip(again.named_params().iter()) {
                assert_eq!(
                    a.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    b.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }
});
