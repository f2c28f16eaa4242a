{{/* Labels of the observability objects (dashboards, monitors, rules); `extra` adds the user's. */}}
{{- define "scaleserve.monitoringLabels" -}}
app.kubernetes.io/name: {{ include "scaleserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: monitoring
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: scaleserve
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}
