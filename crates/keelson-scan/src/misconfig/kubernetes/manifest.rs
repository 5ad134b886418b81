//! Kubernetes objects found in a YAML stream: which documents are objects (they have `apiVersion`
//! and `kind`), where a workload keeps its pod spec, and the containers in it.
//!
//! Invariants: documents that are not Kubernetes objects are skipped, never an error; `List`
//! kinds (`kind: List`, `kind: PodList` …) are opened and their `items` treated as objects; every
//! accessor borrows from the parsed tree, nothing is copied or guessed.

use crate::misconfig::yaml::Node;

/// One Kubernetes object (a document, or an item of a `List`).
#[derive(Debug)]
pub struct Object<'a> {
    pub root: &'a Node,
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// The object's own `metadata` mapping.
    pub metadata: Option<&'a Node>,
    /// The pod spec, for kinds that run pods.
    pub pod: Option<PodSpec<'a>>,
}

/// A pod spec inside an object, and the pod metadata beside it.
#[derive(Debug)]
pub struct PodSpec<'a> {
    /// The `spec` key holding the pod spec: where findings about a missing pod-level key point.
    pub key: &'a Node,
    /// The pod spec mapping.
    pub spec: &'a Node,
    /// The pod's metadata: the object's own for a Pod, the template's for controllers.
    pub metadata: Option<&'a Node>,
    pub containers: Vec<Container<'a>>,
}

/// Which list of the pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Container,
    Init,
    Ephemeral,
}

/// One container of a pod spec.
#[derive(Debug)]
pub struct Container<'a> {
    pub node: &'a Node,
    /// Its `name`, or `containers[2]`-style when the name is missing.
    pub name: String,
    pub kind: ContainerKind,
}

impl<'a> Container<'a> {
    /// Where findings about a key missing from this container point: its `name` key (or `image`
    /// key), else the start of its mapping.
    pub fn anchor(&self) -> &'a Node {
        self.node
            .entry("name")
            .or_else(|| self.node.entry("image"))
            .map_or(self.node, |(key, _)| key)
    }

    /// The key node and value of `field` in the container's `securityContext`.
    pub fn security_field(&self, field: &str) -> Option<(&'a Node, &'a Node)> {
        self.node
            .get("securityContext")?
            .entry(field)
            .filter(|(_, value)| !value.is_null())
    }

    /// The deepest key that exists along `path` inside the container, else [`Container::anchor`]:
    /// where a finding about a missing nested key points.
    pub fn deepest(&self, path: &[&str]) -> &'a Node {
        deepest_key(self.node, path).unwrap_or_else(|| self.anchor())
    }

    /// The container's image reference, if it has one.
    pub fn image(&self) -> Option<(&'a Node, &'a str)> {
        let (key, value) = self.node.entry("image")?;
        Some((key, value.scalar()?))
    }
}

impl<'a> PodSpec<'a> {
    /// The key node and value of `field` in the pod-level `securityContext`.
    pub fn security_field(&self, field: &str) -> Option<(&'a Node, &'a Node)> {
        self.spec
            .get("securityContext")?
            .entry(field)
            .filter(|(_, value)| !value.is_null())
    }

    /// The setting that applies to a container for a field both levels define (`runAsUser`,
    /// `runAsNonRoot`, `seccompProfile` …): the container's own if set, else the pod's.
    pub fn effective(
        &self,
        container: &Container<'a>,
        field: &str,
    ) -> Option<(&'a Node, &'a Node)> {
        container
            .security_field(field)
            .or_else(|| self.security_field(field))
    }

    /// The pod's annotations (pod-template annotations for controllers).
    pub fn annotations(&self) -> &'a [(Node, Node)] {
        self.metadata
            .and_then(|metadata| metadata.get("annotations"))
            .map_or(&[], Node::entries)
    }

    /// The `volumes` of the pod, with a display name for each (`name`, or `volumes[i]`).
    pub fn volumes(&self) -> impl Iterator<Item = (String, &'a Node)> + 'a {
        self.spec
            .get("volumes")
            .map_or(&[][..], Node::items)
            .iter()
            .enumerate()
            .map(|(index, volume)| {
                let name = volume
                    .get("name")
                    .and_then(Node::scalar)
                    .map_or_else(|| format!("volumes[{index}]"), str::to_owned);
                (name, volume)
            })
    }
}

/// The deepest key node that exists along `path` under `node`.
pub fn deepest_key<'a>(node: &'a Node, path: &[&str]) -> Option<&'a Node> {
    let mut current = node;
    let mut found = None;
    for key in path {
        match current.entry(key) {
            Some((key_node, value)) => {
                found = Some(key_node);
                current = value;
            }
            None => break,
        }
    }
    found
}

/// Every Kubernetes object in the parsed documents, in file order.
pub fn objects(documents: &[Node]) -> Vec<Object<'_>> {
    let mut found = Vec::new();
    for document in documents {
        collect(document, &mut found, 0);
    }
    found
}

/// Lists nest at most this deep (a `List` of `List`s …); deeper ones are not opened.
const MAX_LIST_NESTING: usize = 8;

fn collect<'a>(node: &'a Node, found: &mut Vec<Object<'a>>, nesting: usize) {
    let Some(object) = object(node) else {
        return;
    };
    if object.kind.ends_with("List")
        && nesting < MAX_LIST_NESTING
        && let Some(items) = node.get("items")
    {
        for item in items.items() {
            collect(item, found, nesting + 1);
        }
        return;
    }
    found.push(object);
}

fn object(root: &Node) -> Option<Object<'_>> {
    let api_version = root.get("apiVersion")?.scalar()?;
    let kind = root.get("kind")?.scalar()?;
    if api_version.is_empty() || kind.is_empty() {
        return None;
    }
    let metadata = root.get("metadata").filter(|metadata| metadata.is_map());
    let field = |name| metadata.and_then(|m| m.get(name)).and_then(Node::scalar);
    Some(Object {
        root,
        api_version,
        kind,
        name: field("name"),
        namespace: field("namespace"),
        metadata,
        pod: pod_spec(root, kind),
    })
}

/// Where each kind that runs pods keeps its pod template (the path to the mapping holding
/// `metadata` and `spec`); the empty path means the object itself is the pod.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job"
        | "DeploymentConfig" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        "PodTemplate" => &["template"],
        _ => return None,
    })
}

fn pod_spec<'a>(root: &'a Node, kind: &str) -> Option<PodSpec<'a>> {
    let template = root.path(template_path(kind)?)?;
    let (key, spec) = template.entry("spec")?;
    if !spec.is_map() {
        return None;
    }
    let mut containers = Vec::new();
    for (list, kind) in [
        ("containers", ContainerKind::Container),
        ("initContainers", ContainerKind::Init),
        ("ephemeralContainers", ContainerKind::Ephemeral),
    ] {
        let items = spec.get(list).map_or(&[][..], Node::items);
        for (index, node) in items.iter().enumerate() {
            if !node.is_map() {
                continue;
            }
            let name = node
                .get("name")
                .and_then(Node::scalar)
                .map_or_else(|| format!("{list}[{index}]"), str::to_owned);
            containers.push(Container { node, name, kind });
        }
    }
    Some(PodSpec {
        key,
        spec,
        metadata: template.get("metadata").filter(|m| m.is_map()),
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::misconfig::yaml::parse_stream;

    #[test]
    fn finds_pod_specs_in_every_workload_kind() {
        let text = "\
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: ops}
spec:
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {a: b}}
        spec:
          initContainers: [{name: init, image: busybox}]
          containers: [{name: run, image: alpine}, {image: x}]
---
just: some yaml
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: p}
    spec: {containers: [{name: c}], ephemeralContainers: [{name: debug}]}
";
        let documents = parse_stream(text).unwrap();
        let objects = objects(&documents);
        assert_eq!(objects.len(), 2);
        let cron = &objects[0];
        assert_eq!(
            (cron.kind, cron.name, cron.namespace),
            ("CronJob", Some("nightly"), Some("ops"))
        );
        let pod = cron.pod.as_ref().unwrap();
        let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["run", "containers[1]", "init"]);
        assert_eq!(pod.annotations().len(), 1);
        assert_eq!(pod.key.line, 9);
        let listed = objects[1].pod.as_ref().unwrap();
        assert_eq!(listed.containers[1].kind, ContainerKind::Ephemeral);
    }

    #[test]
    fn container_settings_override_pod_settings() {
        let text = "\
apiVersion: v1
kind: Pod
spec:
  securityContext: {runAsUser: 1000, runAsNonRoot: true}
  containers:
    - name: a
      securityContext: {runAsUser: 0}
    - name: b
";
        let documents = parse_stream(text).unwrap();
        let objects = objects(&documents);
        let pod = objects[0].pod.as_ref().unwrap();
        let user = |c| {
            pod.effective(&pod.containers[c], "runAsUser")
                .unwrap()
                .1
                .int()
        };
        assert_eq!(user(0), Some(0));
        assert_eq!(user(1), Some(1000));
        let non_root = pod.effective(&pod.containers[0], "runAsNonRoot").unwrap();
        assert_eq!((non_root.0.line, non_root.1.bool()), (4, Some(true)));
    }
}
