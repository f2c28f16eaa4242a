{{/* Names, labels and RBAC rules shared by the chart's templates. */}}

{{- define "scaleserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scaleserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's Deployment, Service and default ServiceAccount name. */}}
{{- define "scaleserve.operatorName" -}}
{{- printf "%s-operator" (include "scaleserve.fullname" .) -}}
{{- end -}}

{{/* Cluster-scoped objects carry the namespace too: one release per namespace may coexist. */}}
{{- define "scaleserve.clusterName" -}}
{{- printf "%s-%s-operator" .Release.Namespace (include "scaleserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scaleserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "scaleserve.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "scaleserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scaleserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "scaleserve.labels" -}}
{{ include "scaleserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: scaleserve
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "scaleserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The namespaces the operator watches: none means the whole cluster. */}}
{{- define "scaleserve.watchNamespaces" -}}
{{- if eq .Values.operator.scope "namespace" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- join "," (uniq .Values.operator.watchNamespaces) -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does in each namespace it serves (operator/kube.py, operator/cluster.py,
operator/reconcile.py, kopf): watch and patch LLMEndpoints and their status, post events,
server-side apply the endpoint's children (create + patch), list engine pods and StatefulSets,
take a retired group's pods out of the engine Service, delete
replaced engine StatefulSets, read the gateway Deployment. The gateway Role it writes
grants EndpointSlice reads; Kubernetes lets it grant only what it holds itself (RBAC escalation
prevention), hence its own get/list/watch on endpointslices.
*/}}
{{- define "scaleserve.namespacedRules" -}}
- apiGroups: [scaleserve.io]
  resources: [llmendpoints]
  verbs: [get, list, watch, patch]
- apiGroups: [scaleserve.io]
  resources: [llmendpoints/status]
  verbs: [patch]
# children carry blockOwnerDeletion owner references to their LLMEndpoint
- apiGroups: [scaleserve.io]
  resources: [llmendpoints/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# patch: a retired engine group's pods lose the label the engine Service selects
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
# list, watch: the operator watches its children to repair the ones deleted or edited by hand
- apiGroups: [""]
  resources: [services, serviceaccounts]
  verbs: [list, watch, create, patch]
# objectives mode reads its performance profile from a ConfigMap the user names
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [list, watch, create, patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
{{- end -}}

{{/*
What the operator reads cluster-wide in every scope: kopf scans CRDs; placement counts free GPUs
per node from every node, every bound pod and every pinned engine StatefulSet.
*/}}
{{- define "scaleserve.clusterReadRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [list, watch]
{{- end -}}
