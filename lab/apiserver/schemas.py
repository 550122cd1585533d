"""The OpenAPI schemas of the served kinds, with the real API's descriptions of their top-level
fields (and of the RBAC, Lease and review sub-objects), for `kubectl explain`. Pure data, and
its rendering into OpenAPI v3 components and Swagger 2.0 definitions.

A field's type is written as Go's explain prints it: "string", "integer", "boolean", "Object",
"map[string]string", "[]string", or a schema name ("ObjectMeta", "[]PolicyRule"). A kind without
an entry here gets apiVersion, kind, metadata, spec and status with generic descriptions.
"""
from __future__ import annotations

Field = tuple[str, str]                  # (type, description)

API_VERSION_DESC = ("APIVersion defines the versioned schema of this representation of an object. Servers "
                    "should convert recognized schemas to the latest internal value, and may reject "
                    "unrecognized values. More info: https://git.k8s.io/community/contributors/devel/"
                    "sig-architecture/api-conventions.md#resources")
KIND_DESC = ("Kind is a string value representing the REST resource this object represents. Servers may "
             "infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. "
             "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
             "api-conventions.md#types-kinds")
METADATA_DESC = ("Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/"
                 "sig-architecture/api-conventions.md#metadata")
SPEC_DESC = ("Spec defines the desired behavior of the object. More info: https://git.k8s.io/community/"
             "contributors/devel/sig-architecture/api-conventions.md#spec-and-status")
STATUS_DESC = ("Most recently observed status of the object. Populated by the system. Read-only. More "
               "info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
               "api-conventions.md#spec-and-status")

OBJECT_META: dict[str, Field] = {
    "name": ("string", ("Name must be unique within a namespace. Is required when creating resources, although "
                       "some resources may allow a client to request the generation of an appropriate name "
                       "automatically. Cannot be updated.")),
    "generateName": ("string", ("GenerateName is an optional prefix, used by the server, to generate a unique "
                               "name ONLY IF the Name field has not been provided.")),
    "namespace": ("string", ("Namespace defines the space within which each name must be unique. An empty "
                            "namespace is equivalent to the \"default\" namespace. Cannot be updated.")),
    "uid": ("string", ("UID is the unique in time and space value for this object. It is typically generated "
                      "by the server on successful creation of a resource and is not allowed to change on PUT "
                      "operations. Populated by the system. Read-only.")),
    "resourceVersion": ("string", ("An opaque value that represents the internal version of this object that "
                                  "can be used by clients to determine when objects have changed. Populated by "
                                  "the system. Read-only.")),
    "generation": ("integer", ("A sequence number representing a specific generation of the desired state. "
                              "Populated by the system. Read-only.")),
    "creationTimestamp": ("string", ("CreationTimestamp is a timestamp representing the server time when this "
                                    "object was created. Populated by the system. Read-only.")),
    "deletionTimestamp": ("string", ("DeletionTimestamp is RFC 3339 date and time at which this resource will "
                                    "be deleted. Set by the server when a graceful deletion is requested by the "
                                    "user. Read-only.")),
    "labels": ("map[string]string", ("Map of string keys and values that can be used to organize and "
                                    "categorize (scope and select) objects.")),
    "annotations": ("map[string]string", ("Annotations is an unstructured key value map stored with a "
                                         "resource that may be set by external tools to store and retrieve "
                                         "arbitrary metadata.")),
    "ownerReferences": ("[]Object", ("List of objects depended by this object. If ALL objects in the list have "
                                    "been deleted, this object will be garbage collected.")),
    "finalizers": ("[]string", "Must be empty before the object is deleted from the registry."),
}

POLICY_RULE: dict[str, Field] = {
    "apiGroups": ("[]string", ("APIGroups is the name of the APIGroup that contains the resources.  If multiple "
                              "API groups are specified, any action requested against one of the enumerated "
                              "resources in any API group will be allowed. \"\" represents the core API group "
                              "and \"*\" represents all API groups.")),
    "nonResourceURLs": ("[]string", ("NonResourceURLs is a set of partial urls that a user should have access to."
                                    "  *s are allowed, but only as the full, final step in the path. Since "
                                    "non-resource URLs are not namespaced, this field is only applicable for "
                                    "ClusterRoles referenced from a ClusterRoleBinding. Rules can either apply to "
                                    "API resources (such as \"pods\" or \"secrets\") or non-resource URL paths "
                                    "(such as \"/api\"),  but not both.")),
    "resourceNames": ("[]string", ("ResourceNames is an optional white list of names that the rule applies to.  "
                                  "An empty set means that everything is allowed.")),
    "resources": ("[]string", ("Resources is a list of resources this rule applies to. '*' represents all "
                              "resources.")),
    "verbs": ("[]string", ("Verbs is a list of Verbs that apply to ALL the ResourceKinds contained in this rule. "
                          "'*' represents all verbs.")),
}
SUBJECT: dict[str, Field] = {
    "apiGroup": ("string", ("APIGroup holds the API group of the referenced subject. Defaults to \"\" for "
                           "ServiceAccount subjects. Defaults to \"rbac.authorization.k8s.io\" for User and Group "
                           "subjects.")),
    "kind": ("string", ("Kind of object being referenced. Values defined by this API group are \"User\", "
                       "\"Group\", and \"ServiceAccount\". If the Authorizer does not recognized the kind value, "
                       "the Authorizer should report an error.")),
    "name": ("string", "Name of the object being referenced."),
    "namespace": ("string", ("Namespace of the referenced object.  If the object kind is non-namespace, such as "
                            "\"User\" or \"Group\", and this value is not empty the Authorizer should report an "
                            "error.")),
}
ROLE_REF: dict[str, Field] = {
    "apiGroup": ("string", "APIGroup is the group for the resource being referenced"),
    "kind": ("string", "Kind is the type of resource being referenced"),
    "name": ("string", "Name is the name of resource being referenced"),
}
AGGREGATION_RULE: dict[str, Field] = {
    "clusterRoleSelectors": ("[]Object", ("ClusterRoleSelectors holds a list of selectors which will be used to "
                                         "find ClusterRoles and create the rules. If any of the selectors match, "
                                         "then the ClusterRole's permissions will be added")),
}
LEASE_SPEC: dict[str, Field] = {
    "acquireTime": ("string", "acquireTime is a time when the current lease was acquired."),
    "holderIdentity": ("string", ("holderIdentity contains the identity of the holder of a current lease. If "
                                 "Coordinated Leader Election is used, the holder identity must be equal to the "
                                 "elected LeaseCandidate.metadata.name field.")),
    "leaseDurationSeconds": ("integer", ("leaseDurationSeconds is a duration that candidates for a lease need to "
                                        "wait to force acquire it. This is measured against the time of last "
                                        "observed renewTime.")),
    "leaseTransitions": ("integer", "leaseTransitions is the number of transitions of a lease between holders."),
    "preferredHolder": ("string", ("PreferredHolder signals to a lease holder that the lease has a more optimal "
                                  "holder and should be given up.")),
    "renewTime": ("string", "renewTime is a time when the current holder of a lease has last updated the lease."),
    "strategy": ("string", ("Strategy indicates the strategy for picking the leader for coordinated leader "
                           "election.")),
}
ACCESS_REVIEW_SPEC: dict[str, Field] = {
    "resourceAttributes": ("Object", ("ResourceAuthorizationAttributes describes information for a resource "
                                     "access request")),
    "nonResourceAttributes": ("Object", ("NonResourceAttributes describes information for a non-resource access "
                                        "request")),
    "user": ("string", ("User is the user you're testing for. If you specify \"User\" but not \"Groups\", then is "
                       "it interpreted as \"What if User were not a member of any groups")),
    "groups": ("[]string", "Groups is the groups you're testing for."),
    "uid": ("string", "UID information about the requesting user."),
}
ACCESS_REVIEW_STATUS: dict[str, Field] = {
    "allowed": ("boolean", "Allowed is required. True if the action would be allowed, false otherwise."),
    "denied": ("boolean", "Denied is optional. True if the action would be denied, otherwise false."),
    "reason": ("string", "Reason is optional.  It indicates why a request was allowed or denied."),
    "evaluationError": ("string", ("EvaluationError is an indication that some error occurred during the "
                                  "authorization check.")),
}

POD_SPEC: dict[str, Field] = {
    "containers": ("[]Container", ("List of containers belonging to the pod. Containers cannot currently be added "
                                  "or removed. There must be at least one container in a Pod. Cannot be updated.")),
    "initContainers": ("[]Container", ("List of initialization containers belonging to the pod. Init containers "
                                      "are executed in order prior to containers being started.")),
    "nodeName": ("string", ("NodeName indicates in which node this pod is scheduled. If empty, this pod is a "
                           "candidate for scheduling by the scheduler defined in schedulerName.")),
    "nodeSelector": ("map[string]string", ("NodeSelector is a selector which must be true for the pod to fit on a "
                                          "node. Selector which must match a node's labels for the pod to be "
                                          "scheduled on that node.")),
    "restartPolicy": ("string", ("Restart policy for all containers within the pod. One of Always, OnFailure, "
                                "Never. Default to Always.")),
    "serviceAccountName": ("string", ("ServiceAccountName is the name of the ServiceAccount to use to run this "
                                     "pod.")),
    "automountServiceAccountToken": ("boolean", ("AutomountServiceAccountToken indicates whether a service "
                                                "account token should be automatically mounted.")),
    "hostNetwork": ("boolean", ("Host networking requested for this pod. Use the host's network namespace. "
                               "Default to false.")),
    "terminationGracePeriodSeconds": ("integer", ("Optional duration in seconds the pod needs to terminate "
                                                 "gracefully. Defaults to 30 seconds.")),
    "tolerations": ("[]Object", "If specified, the pod's tolerations."),
    "volumes": ("[]Object", "List of volumes that can be mounted by containers belonging to the pod."),
}
CONTAINER: dict[str, Field] = {
    "name": ("string", ("Name of the container specified as a DNS_LABEL. Each container in a pod must have a "
                       "unique name (DNS_LABEL). Cannot be updated.")),
    "image": ("string", "Container image name."),
    "command": ("[]string", ("Entrypoint array. Not executed within a shell. The container image's ENTRYPOINT is "
                            "used if this is not provided.")),
    "args": ("[]string", ("Arguments to the entrypoint. The container image's CMD is used if this is not "
                         "provided.")),
    "env": ("[]Object", "List of environment variables to set in the container. Cannot be updated."),
    "ports": ("[]Object", "List of ports to expose from the container."),
    "readinessProbe": ("Object", ("Periodic probe of container service readiness. Container will be removed from "
                                 "service endpoints if the probe fails.")),
    "livenessProbe": ("Object", ("Periodic probe of container liveness. Container will be restarted if the probe "
                                "fails.")),
    "resources": ("Object", "Compute Resources required by this container. Cannot be updated."),
    "volumeMounts": ("[]Object", "Pod volumes to mount into the container's filesystem. Cannot be updated."),
}
SERVICE_SPEC: dict[str, Field] = {
    "type": ("string", ("type determines how the Service is exposed. Defaults to ClusterIP. Valid options are "
                       "ExternalName, ClusterIP, NodePort, and LoadBalancer.")),
    "selector": ("map[string]string", ("Route service traffic to pods with label keys and values matching this "
                                      "selector.")),
    "ports": ("[]ServicePort", "The list of ports that are exposed by this service."),
    "clusterIP": ("string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    "externalTrafficPolicy": ("string", ("externalTrafficPolicy describes how nodes distribute service traffic "
                                        "they receive on one of the Service's \"externally-facing\" addresses.")),
    "sessionAffinity": ("string", "Supports \"ClientIP\" and \"None\". Used to maintain session affinity."),
}
SERVICE_PORT: dict[str, Field] = {
    "name": ("string", "The name of this port within the service. This must be a DNS_LABEL."),
    "port": ("integer", "The port that will be exposed by this service."),
    "targetPort": ("string", "Number or name of the port to access on the pods targeted by the service."),
    "protocol": ("string", ("The IP protocol for this port. Supports \"TCP\", \"UDP\", and \"SCTP\". Default "
                           "is TCP.")),
    "nodePort": ("integer", ("The port on each node on which this service is exposed when type is NodePort or "
                            "LoadBalancer.")),
}

INGRESS_SPEC: dict[str, Field] = {
    "defaultBackend": ("Object", ("defaultBackend is the backend that should handle requests that don't match any "
                                 "rule. If Rules are not specified, DefaultBackend must be specified. If "
                                 "DefaultBackend is not set, the handling of requests that do not match any of the "
                                 "rules will be up to the Ingress controller.")),
    "ingressClassName": ("string", ("ingressClassName is the name of an IngressClass cluster resource. Ingress "
                                   "controller implementations use this field to know whether they should be "
                                   "serving this Ingress resource, by a transitive connection (controller -> "
                                   "IngressClass -> Ingress resource).")),
    "rules": ("[]Object", ("rules is a list of host rules used to configure the Ingress. If unspecified, or no "
                          "rule matches, all traffic is sent to the default backend.")),
    "tls": ("[]Object", ("tls represents the TLS configuration. Currently the Ingress only supports a single TLS "
                        "port, 443. If multiple members of this list specify different hosts, they will be "
                        "multiplexed on the same port according to the hostname specified through the SNI TLS "
                        "extension, if the ingress controller fulfilling the ingress supports SNI.")),
}
INGRESS_CLASS_SPEC: dict[str, Field] = {
    "controller": ("string", ("controller refers to the name of the controller that should handle this class. "
                             "This allows for different \"flavors\" that are controlled by the same controller. "
                             "This should be specified as a domain-prefixed path no more than 250 characters in "
                             "length, e.g. \"acme.io/ingress-controller\". This field is immutable.")),
    "parameters": ("Object", ("parameters is a link to a custom resource containing additional configuration for "
                             "the controller. This is optional if the controller does not require extra "
                             "parameters.")),
}

# sub-schemas by name (referenced from fields as "PolicyRule", "[]Subject", ...)
DEFINITIONS: dict[str, tuple[str, str, dict[str, Field]]] = {
    # name: (schema id, description, fields)
    "ObjectMeta": ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                   ("ObjectMeta is metadata that all persisted resources must have, which includes all objects "
                   "users must create."), OBJECT_META),
    "PolicyRule": ("io.k8s.api.rbac.v1.PolicyRule",
                   ("PolicyRule holds information that describes a policy rule, but does not contain information "
                   "about who the rule applies to or which namespace the rule applies to."), POLICY_RULE),
    "Subject": ("io.k8s.api.rbac.v1.Subject",
                ("Subject contains a reference to the object or user identities a role binding applies to.  This "
                "can either hold a direct API object reference, or a value for non-objects such as user and group "
                "names."), SUBJECT),
    "RoleRef": ("io.k8s.api.rbac.v1.RoleRef", "RoleRef contains information that points to the role being used",
                ROLE_REF),
    "AggregationRule": ("io.k8s.api.rbac.v1.AggregationRule",
                        "AggregationRule describes how to locate ClusterRoles to aggregate into the ClusterRole",
                        AGGREGATION_RULE),
    "LeaseSpec": ("io.k8s.api.coordination.v1.LeaseSpec", "LeaseSpec is a specification of a Lease.", LEASE_SPEC),
    "SubjectAccessReviewSpec": ("io.k8s.api.authorization.v1.SubjectAccessReviewSpec",
                                ("SubjectAccessReviewSpec is a description of the access request.  Exactly one of "
                                "ResourceAuthorizationAttributes and NonResourceAuthorizationAttributes must be "
                                "set"), ACCESS_REVIEW_SPEC),
    "SubjectAccessReviewStatus": ("io.k8s.api.authorization.v1.SubjectAccessReviewStatus",
                                  "SubjectAccessReviewStatus", ACCESS_REVIEW_STATUS),
    "PodSpec": ("io.k8s.api.core.v1.PodSpec", "PodSpec is a description of a pod.", POD_SPEC),
    "Container": ("io.k8s.api.core.v1.Container", ("A single application container that you want to run within a "
                                                  "pod."), CONTAINER),
    "ServiceSpec": ("io.k8s.api.core.v1.ServiceSpec", ("ServiceSpec describes the attributes that a user creates "
                                                      "on a service."), SERVICE_SPEC),
    "ServicePort": ("io.k8s.api.core.v1.ServicePort", "ServicePort contains information on service's port.",
                    SERVICE_PORT),
    "IngressSpec": ("io.k8s.api.networking.v1.IngressSpec",
                    "IngressSpec describes the Ingress the user wishes to exist.", INGRESS_SPEC),
    "IngressClassSpec": ("io.k8s.api.networking.v1.IngressClassSpec",
                         "IngressClassSpec provides information about the class of an Ingress.", INGRESS_CLASS_SPEC),
}

_RULES = ("[]PolicyRule", "Rules holds all the PolicyRules for this Role")
_SUBJECTS = ("[]Subject", "Subjects holds references to the objects the role applies to.")
_ACCESS_REVIEW = {"spec": ("SubjectAccessReviewSpec", "Spec holds information about the request being evaluated"),
                  "status": ("SubjectAccessReviewStatus", ("Status is filled in by the server and indicates "
                                                          "whether the request is allowed or not"))}

# kind -> (description, fields besides apiVersion, kind and metadata)
KINDS: dict[str, tuple[str, dict[str, Field]]] = {
    "Namespace": ("Namespace provides a scope for Names. Use of multiple namespaces is optional.",
                  {"spec": ("Object", "Spec defines the behavior of the Namespace."),
                   "status": ("Object", "Status describes the current status of a Namespace.")}),
    "Node": (("Node is a worker node in Kubernetes. Each node will have a unique identifier in the cache (i.e. in "
             "etcd)."), {"spec": ("Object", "Spec defines the behavior of a node."),
                        "status": ("Object", ("Most recently observed status of the node. Populated by the "
                                             "system. Read-only."))}),
    "Pod": (("Pod is a collection of containers that can run on a host. This resource is created by clients and "
            "scheduled onto hosts."), {"spec": ("PodSpec", "Specification of the desired behavior of the pod."),
                                      "status": ("Object", ("Most recently observed status of the pod. This data "
                                                           "may not be up to date. Populated by the system. "
                                                           "Read-only."))}),
    "Service": (("Service is a named abstraction of software service (for example, mysql) consisting of local port "
                "(for example 3306) that the proxy listens on, and the selector that determines which pods will "
                "answer requests sent through the proxy."),
                {"spec": ("ServiceSpec", "Spec defines the behavior of a service."),
                 "status": ("Object", ("Most recently observed status of the service. Populated by the system. "
                                      "Read-only."))}),
    "ConfigMap": ("ConfigMap holds configuration data for pods to consume.", {
        "data": ("map[string]string", ("Data contains the configuration data. Each key must consist of "
                                      "alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte "
                                      "sequences must use the BinaryData field. The keys stored in Data must not "
                                      "overlap with the keys in the BinaryData field, this is enforced during "
                                      "validation process.")),
        "binaryData": ("map[string]string", ("BinaryData contains the binary data. Each key must consist of "
                                            "alphanumeric characters, '-', '_' or '.'. BinaryData can contain "
                                            "byte sequences that are not in the UTF-8 range. The keys stored in "
                                            "BinaryData must not overlap with the ones in the Data field, this is "
                                            "enforced during validation process.")),
        "immutable": ("boolean", ("Immutable, if set to true, ensures that data stored in the ConfigMap cannot be "
                                 "updated (only object metadata can be modified). If not set to true, the field "
                                 "can be modified at any time. Defaulted to nil.")),
    }),
    "Secret": (("Secret holds secret data of a certain type. The total bytes of the values in the Data field must "
               "be less than MaxSecretSize bytes."), {
        "data": ("map[string]string", ("Data contains the secret data. Each key must consist of alphanumeric "
                                      "characters, '-', '_' or '.'. The serialized form of the secret data is a "
                                      "base64 encoded string, representing the arbitrary (possibly non-string) "
                                      "data value here. Described in https://tools.ietf.org/html/rfc4648#section-4")),
        "stringData": ("map[string]string", ("stringData allows specifying non-binary secret data in string form. "
                                            "It is provided as a write-only input field for convenience. All keys "
                                            "and values are merged into the data field on write, overwriting any "
                                            "existing values. The stringData field is never output when reading "
                                            "from the API.")),
        "type": ("string", ("Used to facilitate programmatic handling of secret data. More info: "
                           "https://kubernetes.io/docs/concepts/configuration/secret/#secret-types")),
        "immutable": ("boolean", ("Immutable, if set to true, ensures that data stored in the Secret cannot be "
                                 "updated (only object metadata can be modified). If not set to true, the field "
                                 "can be modified at any time. Defaulted to nil.")),
    }),
    "ServiceAccount": (("ServiceAccount binds together: * a name, understood by users, and perhaps by peripheral "
                       "systems, for an identity * a principal that can be authenticated and authorized * a set "
                       "of secrets"), {
        "automountServiceAccountToken": ("boolean", ("AutomountServiceAccountToken indicates whether pods running "
                                                    "as this service account should have an API token "
                                                    "automatically mounted. Can be overridden at the pod level.")),
        "imagePullSecrets": ("[]Object", ("ImagePullSecrets is a list of references to secrets in the same "
                                         "namespace to use for pulling any images in pods that reference this "
                                         "ServiceAccount.")),
        "secrets": ("[]Object", ("Secrets is a list of the secrets in the same namespace that pods running using "
                                "this ServiceAccount are allowed to use.")),
    }),
    "Endpoints": (("Endpoints is a collection of endpoints that implement the actual service. Deprecated: This API "
                  "is deprecated in v1.33+. Use discoveryv1.EndpointSlice."), {
        "subsets": ("[]Object", ("The set of all endpoints is the union of all subsets. Addresses are placed into "
                                "subsets according to the IPs they share. A single address with multiple ports, "
                                "some of which are ready and some of which are not (because they come from "
                                "different containers) will result in the address being displayed in different "
                                "subsets for the different ports.")),
    }),
    "EndpointSlice": ("EndpointSlice represents a set of service endpoints.", {
        "addressType": ("string", ("addressType specifies the type of address carried by this EndpointSlice. All "
                                  "addresses in this slice must be the same type. This field is immutable after "
                                  "creation.")),
        "endpoints": ("[]Object", ("endpoints is a list of unique endpoints in this slice. Each slice may include "
                                  "a maximum of 1000 endpoints.")),
        "ports": ("[]Object", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    }),
    "NetworkPolicy": ("NetworkPolicy describes what network traffic is allowed for a set of Pods",
                      {"spec": ("Object", ("spec represents the specification of the desired behavior for this "
                                          "NetworkPolicy."))}),
    "Ingress": (("Ingress is a collection of rules that allow inbound connections to reach the endpoints defined "
                "by a backend. An Ingress can be configured to give services externally-reachable urls, load "
                "balance traffic, terminate SSL, offer name based virtual hosting etc."), {
        "spec": ("IngressSpec", ("spec is the desired state of the Ingress. More info: https://git.k8s.io/community/"
                                "contributors/devel/sig-architecture/api-conventions.md#spec-and-status")),
        "status": ("Object", ("status is the current state of the Ingress. More info: https://git.k8s.io/"
                             "community/contributors/devel/sig-architecture/api-conventions.md#spec-and-status")),
    }),
    "IngressClass": (("IngressClass represents the class of the Ingress, referenced by the Ingress Spec. The "
                     "`ingressclass.kubernetes.io/is-default-class` annotation can be used to indicate that an "
                     "IngressClass should be considered default. When a single IngressClass resource has this "
                     "annotation set to true, new Ingress resources without a class specified will be assigned "
                     "this default class."), {
        "spec": ("IngressClassSpec", ("spec is the desired state of the IngressClass. More info: https://git.k8s.io/"
                                     "community/contributors/devel/sig-architecture/"
                                     "api-conventions.md#spec-and-status")),
    }),
    "Event": ("Event is a report of an event somewhere in the cluster.", {
        "involvedObject": ("Object", "The object that this event is about."),
        "reason": ("string", ("This should be a short, machine understandable string that gives the reason for "
                             "the transition into the object's current status.")),
        "message": ("string", "A human-readable description of the status of this operation."),
        "type": ("string", "Type of this event (Normal, Warning), new types could be added in the future"),
        "count": ("integer", "The number of times this event has occurred."),
    }),
    "Role": (("Role is a namespaced, logical grouping of PolicyRules that can be referenced as a unit by a "
             "RoleBinding."), {"rules": _RULES}),
    "ClusterRole": (("ClusterRole is a cluster level, logical grouping of PolicyRules that can be referenced as a "
                    "unit by a RoleBinding or ClusterRoleBinding."), {
        "rules": ("[]PolicyRule", "Rules holds all the PolicyRules for this ClusterRole"),
        "aggregationRule": ("AggregationRule", ("AggregationRule is an optional field that describes how to build "
                                               "the Rules for this ClusterRole. If AggregationRule is set, then "
                                               "the Rules are controller managed and direct changes to Rules will "
                                               "be stomped by the controller.")),
    }),
    "RoleBinding": (("RoleBinding references a role, but does not contain it.  It can reference a Role in the same "
                    "namespace or a ClusterRole in the global namespace. It adds who information via Subjects and "
                    "namespace information by which namespace it exists in.  RoleBindings in a given namespace "
                    "only have effect in that namespace."), {
        "roleRef": ("RoleRef", ("RoleRef can reference a Role in the current namespace or a ClusterRole in the "
                               "global namespace. If the RoleRef cannot be resolved, the Authorizer must return an "
                               "error. This field is immutable.")),
        "subjects": _SUBJECTS,
    }),
    "ClusterRoleBinding": (("ClusterRoleBinding references a ClusterRole, but not contain it.  It can reference a "
                           "ClusterRole in the global namespace, and adds who information via Subject."), {
        "roleRef": ("RoleRef", ("RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef "
                               "cannot be resolved, the Authorizer must return an error. This field is immutable.")),
        "subjects": _SUBJECTS,
    }),
    "SelfSubjectAccessReview": (("SelfSubjectAccessReview checks whether or the current user can perform an "
                                "action.  Not filling in a spec.namespace means \"in all namespaces\".  Self is a "
                                "special case, because users should always be able to check whether they can "
                                "perform an action"), _ACCESS_REVIEW),
    "SubjectAccessReview": ("SubjectAccessReview checks whether or not a user or group can perform an action.",
                            _ACCESS_REVIEW),
    "LocalSubjectAccessReview": (("LocalSubjectAccessReview checks whether or not a user or group can perform an "
                                 "action in a given namespace. Having a namespace scoped resource makes it much "
                                 "easier to grant namespace scoped policy that includes permissions checking."),
                                 _ACCESS_REVIEW),
    "SelfSubjectRulesReview": (("SelfSubjectRulesReview enumerates the set of actions the current user can "
                               "perform within a namespace."), {
        "spec": ("Object", "Spec holds information about the request being evaluated."),
        "status": ("Object", ("Status is filled in by the server and indicates the set of actions a user can "
                             "perform.")),
    }),
    "SelfSubjectReview": (("SelfSubjectReview contains the user information that the kube-apiserver has about the "
                          "user making this request."), {
        "status": ("Object", "Status is filled in by the server with the user attributes."),
    }),
    "ClusterNetworkPolicy": ("ClusterNetworkPolicy is a cluster-wide network policy resource.", {
        "spec": ("Object", "Spec defines the desired behavior of ClusterNetworkPolicy."),
        "status": ("Object", "Status is the status to be reported by the implementation."),
    }),
    "ServiceCIDR": (("ServiceCIDR defines a range of IP addresses using CIDR format (e.g. 192.168.0.0/24 or "
                     "2001:db2::/64). This range is used to allocate ClusterIPs to Service objects."), {
        "spec": ("Object", ("spec is the desired state of the ServiceCIDR. More info: https://git.k8s.io/"
                           "community/contributors/devel/sig-architecture/api-conventions.md#spec-and-status")),
        "status": ("Object", ("status represents the current state of the ServiceCIDR. More info: https://git.k8s.io/"
                             "community/contributors/devel/sig-architecture/api-conventions.md#spec-and-status")),
    }),
    "IPAddress": (("IPAddress represents a single IP of a single IP Family. The object is designed to be used by "
                   "APIs that operate on IP addresses. The object is used by the Service core API for allocation "
                   "of IP addresses."), {
        "spec": ("Object", ("spec is the desired state of the IPAddress. More info: https://git.k8s.io/community/"
                           "contributors/devel/sig-architecture/api-conventions.md#spec-and-status")),
    }),
    "Lease": ("Lease defines a lease concept.", {
        "spec": ("LeaseSpec", ("spec contains the specification of the Lease. More info: https://git.k8s.io/"
                              "community/contributors/devel/sig-architecture/api-conventions.md#spec-and-status")),
    }),
    "Deployment": ("Deployment enables declarative updates for Pods and ReplicaSets.", {
        "spec": ("Object", "Specification of the desired behavior of the Deployment."),
        "status": ("Object", "Most recently observed status of the Deployment."),
    }),
    "ReplicaSet": ("ReplicaSet ensures that a specified number of pod replicas are running at any given time.", {
        "spec": ("Object", ("Spec defines the specification of the desired behavior of the ReplicaSet. More info: "
                           "https://git.k8s.io/community/contributors/devel/sig-architecture/"
                           "api-conventions.md#spec-and-status")),
        "status": ("Object", ("Status is the most recently observed status of the ReplicaSet. This data may be out "
                             "of date by some window of time. Populated by the system. Read-only. More info: "
                             "https://git.k8s.io/community/contributors/devel/sig-architecture/"
                             "api-conventions.md#spec-and-status")),
    }),
    "DaemonSet": ("DaemonSet represents the configuration of a daemon set.", {
        "spec": ("Object", ("The desired behavior of this daemon set. More info: https://git.k8s.io/community/"
                           "contributors/devel/sig-architecture/api-conventions.md#spec-and-status")),
        "status": ("Object", ("The current status of this daemon set. This data may be out of date by some window "
                             "of time. Populated by the system. Read-only. More info: https://git.k8s.io/"
                             "community/contributors/devel/sig-architecture/api-conventions.md#spec-and-status")),
    }),
    "ControllerRevision": (("ControllerRevision implements an immutable snapshot of state data. Clients are "
                           "responsible for serializing and deserializing the objects that contain their internal "
                           "state. Once a ControllerRevision has been successfully created, it can not be updated. "
                           "The API Server will fail validation of all requests that attempt to mutate the Data "
                           "field. ControllerRevisions may, however, be deleted."), {
        "data": ("Object", "Data is the serialized representation of the state."),
        "revision": ("integer", "Revision indicates the revision of the state represented by Data."),
    }),
}


def schema_id(group: str, version: str, kind: str) -> str:
    """io.k8s.api.<package>.<version>.<Kind>, as the real OpenAPI names definitions."""
    package = group.split(".")[0] if group else "core"
    return f"io.k8s.api.{package}.{version}.{kind}"


def kind_fields(kind: str) -> tuple[str, dict[str, Field]]:
    description, fields = KINDS.get(kind, (f"{kind} is an object the lab's API server serves.",
                                           {"spec": ("Object", SPEC_DESC), "status": ("Object", STATUS_DESC)}))
    return description, {"apiVersion": ("string", API_VERSION_DESC), "kind": ("string", KIND_DESC),
                         "metadata": ("ObjectMeta", METADATA_DESC), **fields}


def _property(typ: str, description: str, ref_prefix: str, refs: set[str]) -> dict:
    if typ.startswith("[]"):
        item = _property(typ[2:], "", ref_prefix, refs)
        item.pop("description", None)
        return {"type": "array", "items": item, "description": description}
    if typ.startswith("map[string]"):
        return {"type": "object", "additionalProperties": {"type": typ[len("map[string]"):]},
                "description": description}
    if typ in ("string", "integer", "boolean"):
        out: dict = {"type": typ}
        if description:
            out["description"] = description
        return out
    if typ == "Object":
        return {"type": "object", "description": description} if description else {"type": "object"}
    refs.add(typ)
    ref = {"$ref": ref_prefix + DEFINITIONS[typ][0]}
    if not description:
        return ref
    # v3 wraps a described reference in allOf (a $ref's siblings are ignored); Swagger 2.0 cannot
    return {"allOf": [ref], "description": description} if ref_prefix.startswith("#/components") else \
        {**ref, "description": description}


def _object(description: str, fields: dict[str, Field], ref_prefix: str, refs: set[str]) -> dict:
    return {"description": description, "type": "object",
            "properties": {name: _property(typ, desc, ref_prefix, refs) for name, (typ, desc) in fields.items()}}


def render_schemas(kinds: list[tuple[str, str, str]], ref_prefix: str) -> dict:
    """{schema id: schema} for (group, version, kind) triples and every sub-schema they reference.
    ref_prefix is "#/components/schemas/" (v3) or "#/definitions/" (v2)."""
    out: dict = {}
    refs: set[str] = set()
    for group, version, kind in kinds:
        description, fields = kind_fields(kind)
        schema = _object(description, fields, ref_prefix, refs)
        schema["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version}]
        out[schema_id(group, version, kind)] = schema
    done: set[str] = set()
    while refs - done:
        name = min(refs - done)
        done.add(name)
        sid, description, fields = DEFINITIONS[name]
        out[sid] = _object(description, fields, ref_prefix, refs)
    return out
