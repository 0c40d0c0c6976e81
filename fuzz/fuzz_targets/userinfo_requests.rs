//! Every userinfo-service RPC with fuzzed request bytes, as any caller: the same checks as
//! `auth_requests`. Input: method byte, caller byte, message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miniprogram_fuzz::{Server, USERINFO_METHODS, check_answer, platform, split};

fuzz_target!(|data: &[u8]| {
    let Some((selector, caller, message)) = split(data) else {
        return;
    };
    let (path, streaming) = USERINFO_METHODS[usize::from(selector) % USERINFO_METHODS.len()];
    let answer = platform().call(Server::UserInfo, path, caller, message, streaming);
    check_answer(path, &answer);
});
