{{/*
Checks across values that the schema cannot express; each failure names the value to change.
Included by the ConfigMap, which every release renders.
*/}}
{{- define "flink-ha.validate" -}}
{{- if and (eq .Values.mode "application") (not .Values.application.jobClassName) }}
{{- fail "mode: application needs application.jobClassName (the job's main class, in a jar under <image.flinkHome>/usrlib)" }}
{{- end }}
{{- if and (not .Values.zookeeper.external.quorum) (eq (mod (int .Values.zookeeper.replicas) 2) 0) }}
{{- fail (printf "zookeeper.replicas is %d: use an odd number (an even ensemble tolerates no more failures than one member fewer)" (int .Values.zookeeper.replicas)) }}
{{- end }}
{{- if and (eq .Values.jobmanager.rpcAddress "service") (not .Values.rbac.create) (not .Values.serviceAccount.name) }}
{{- fail "rbac.create: false needs serviceAccount.name: a ServiceAccount you bound to a Role like rbac/role.yaml (port-sync must get, list, watch and patch the JobManager Service)" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (or (eq (include "flink-ha.firstPort" .Values.highAvailability.jobManagerPort) "0") (eq (include "flink-ha.firstPort" .Values.blobServerPort) "0")) }}
{{- fail "networkPolicy.enabled needs pinned ports: set highAvailability.jobManagerPort and blobServerPort to a port or a range, not 0" }}
{{- end }}
{{- end }}
