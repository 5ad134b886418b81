//! Property tests: the pure parsers never panic on arbitrary input, and valid values round-trip.

use keelson_registry::manifest::parse_manifest;
use keelson_registry::reference::{Digest, Reference, RepoName, Tag};
use proptest::prelude::*;

proptest! {
    #[test]
    fn reference_parsers_never_panic(input in ".{0,300}") {
        let _ = RepoName::parse(&input);
        let _ = Tag::parse(&input);
        let _ = Digest::parse(&input);
        let _ = Reference::parse(&input);
    }

    #[test]
    fn reference_parsers_never_panic_on_near_misses(input in "[a-zA-Z0-9._/:-]{0,80}") {
        if let Ok(name) = RepoName::parse(&input) {
            prop_assert!(!name.components().any(|c| c.is_empty() || c == ".." || c == "."));
        }
        let _ = Reference::parse(&input);
    }

    #[test]
    fn valid_digests_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
        let digest = Digest::from_bytes(bytes);
        prop_assert_eq!(Digest::parse(&digest.to_string()), Ok(digest));
    }

    #[test]
    fn valid_names_parse(name in "[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}){0,3}") {
        prop_assert!(RepoName::parse(&name).is_ok(), "{}", name);
    }

    #[test]
    fn manifest_parser_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512), content_type in proptest::option::of(".{0,60}")) {
        let _ = parse_manifest(&body, content_type.as_deref());
    }

    #[test]
    fn manifest_parser_never_panics_on_json_like_input(
        schema in any::<i64>(),
        media_type in "[a-z./+0-9-]{0,60}",
        digest in "[a-z0-9:]{0,80}",
        size in any::<i64>(),
    ) {
        let body = format!(
            r#"{{"schemaVersion":{schema},"mediaType":"{media_type}","config":{{"mediaType":"x","digest":"{digest}","size":{size}}},"layers":[{{"mediaType":"y","digest":"{digest}","size":1}}],"manifests":[{{"mediaType":"z","digest":"{digest}","size":1}}],"subject":{{"mediaType":"s","digest":"{digest}","size":1}}}}"#
        );
        let _ = parse_manifest(body.as_bytes(), None);
        let _ = parse_manifest(body.as_bytes(), Some(&media_type));
    }
}
