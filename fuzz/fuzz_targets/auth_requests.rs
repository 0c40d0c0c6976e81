//! Every auth-service RPC with fuzzed request bytes (prost decoding, then the service's own
//! checks of each field), as any caller: an answer within 10 s, and every error carries its
//! `ErrorInfo` reason and is never `INTERNAL`. Input: method byte, caller byte, message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miniprogram_fuzz::{AUTH_METHODS, Server, check_answer, platform, split};

fuzz_target!(|data: &[u8]| {
    let Some((selector, caller, message)) = split(data) else {
        return;
    };
    let (path, streaming) = AUTH_METHODS[usize::from(selector) % AUTH_METHODS.len()];
    let answer = platform().call(Server::Auth, path, caller, message, streaming);
    check_answer(path, &answer);
});
