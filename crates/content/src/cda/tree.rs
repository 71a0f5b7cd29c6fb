//! Small readers over the parsed XML: elements in the HL7 v3 namespace by name, their
//! attributes and text. Every walk here is a loop over siblings or a fixed path, never
//! a recursion over the tree.

use roxmltree::Node;

/// The namespace of CDA R2 elements (CDA R2 §1.1).
pub(super) const V3: &str = "urn:hl7-org:v3";

/// Whether `node` is the v3 element `name`.
pub(super) fn is(node: Node, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(V3)
}

/// The v3 child elements of `node` called `name`.
pub(super) fn children<'a, 'input>(
    node: Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(move |child| is(*child, name))
}

/// The first v3 child element of `node` called `name`.
pub(super) fn child<'a, 'input>(
    node: Node<'a, 'input>,
    name: &'static str,
) -> Option<Node<'a, 'input>> {
    children(node, name).next()
}

/// The element at `path` below `node`, taking the first match at each step.
pub(super) fn path<'a, 'input>(
    node: Node<'a, 'input>,
    path: &[&'static str],
) -> Option<Node<'a, 'input>> {
    path.iter().try_fold(node, |node, name| child(node, name))
}

/// An attribute without a namespace, trimmed, if present and not empty.
pub(super) fn attr<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attribute(name)
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// Whether `node` says its value is absent (`nullFlavor`, CDA R2 data types).
pub(super) fn is_null(node: Node) -> bool {
    node.attribute("nullFlavor").is_some()
}

/// Whether `node` has a `templateId` with this `root`.
pub(super) fn has_template(node: Node, root: &str) -> bool {
    children(node, "templateId").any(|id| attr(id, "root") == Some(root))
}

/// The text of `node` and everything inside it, white space collapsed; `None` if there
/// is none.
pub(super) fn text_of(node: Node) -> Option<String> {
    let mut out = String::new();
    for text in node.descendants().filter(Node::is_text) {
        push_collapsed(&mut out, text.text().unwrap_or_default());
    }
    let trimmed = out.trim_end();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// Appends `text` to `out` with runs of white space as one space, and none where `out`
/// is empty or already ends in white space.
pub(super) fn push_collapsed(out: &mut String, text: &str) {
    let mut space_before = text.starts_with(char::is_whitespace);
    for word in text.split_whitespace() {
        if space_before && !out.is_empty() && !out.ends_with(char::is_whitespace) {
            out.push(' ');
        }
        out.push_str(word);
        space_before = true;
    }
    if text.ends_with(char::is_whitespace) && !out.is_empty() && !out.ends_with(char::is_whitespace)
    {
        out.push(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_collapsed_across_child_elements() {
        let xml = "<a xmlns='urn:hl7-org:v3'>  Good <b>Health</b>\n   Clinic<i>s</i>  </a>";
        let doc = roxmltree::Document::parse(xml).unwrap();
        assert_eq!(
            text_of(doc.root_element()).as_deref(),
            Some("Good Health Clinics")
        );
        let empty = roxmltree::Document::parse("<a> \n </a>").unwrap();
        assert_eq!(text_of(empty.root_element()), None);
    }
}
