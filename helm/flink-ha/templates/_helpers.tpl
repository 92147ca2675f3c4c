{{/*
Names. Kubernetes names are at most 63 characters; each suffixed name is cut again after the
suffix so that no object name (a Service name must be a DNS-1035 label) runs over.
*/}}
{{- define "flink-ha.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flink-ha.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>", cut to 63 characters. Call with (list $ "suffix"). */}}
{{- define "flink-ha.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "flink-ha.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flink-ha.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The JobManager Service: Flink's jobmanager.rpc.address, port-sync's --service, the Role's resourceNames. */}}
{{- define "flink-ha.jobmanagerService" -}}
{{- include "flink-ha.componentName" (list . "jobmanager") }}
{{- end }}

{{- define "flink-ha.zookeeperName" -}}
{{- include "flink-ha.componentName" (list . "zookeeper") }}
{{- end }}

{{- define "flink-ha.zookeeperHeadless" -}}
{{- include "flink-ha.componentName" (list . "zookeeper-headless") }}
{{- end }}

{{- define "flink-ha.configName" -}}
{{- include "flink-ha.componentName" (list . "config") }}
{{- end }}

{{- define "flink-ha.portSyncName" -}}
{{- include "flink-ha.componentName" (list . "port-sync") }}
{{- end }}

{{- define "flink-ha.serviceAccountName" -}}
{{- default (include "flink-ha.portSyncName" .) .Values.serviceAccount.name }}
{{- end }}

{{/* Whether port-sync runs: only when TaskManagers reach the JobManager through its Service. */}}
{{- define "flink-ha.portSyncEnabled" -}}
{{- if eq .Values.jobmanager.rpcAddress "service" }}true{{ end }}
{{- end }}

{{/* Whether the chart deploys its own ZooKeeper. */}}
{{- define "flink-ha.zookeeperInChart" -}}
{{- if not .Values.zookeeper.external.quorum }}true{{ end }}
{{- end }}

{{/*
The ZooKeeper connect string, one for both Flink (high-availability.zookeeper.quorum) and
zk-wait (--zookeeper): every member by its own name under the headless Service, not the client
Service, because zk-wait counts members that serve and a Service would hide which one answered.
*/}}
{{- define "flink-ha.zookeeperQuorum" -}}
{{- if .Values.zookeeper.external.quorum }}
{{- .Values.zookeeper.external.quorum }}
{{- else }}
{{- $members := list }}
{{- $name := include "flink-ha.zookeeperName" . }}
{{- $headless := include "flink-ha.zookeeperHeadless" . }}
{{- range $ordinal := until (int .Values.zookeeper.replicas) }}
{{- $members = append $members (printf "%s-%d.%s.%s.svc.%s:%d" $name $ordinal $headless $.Release.Namespace $.Values.clusterDomain (int $.Values.zookeeper.clientPort)) }}
{{- end }}
{{- join "," $members }}
{{- end }}
{{- end }}

{{- define "flink-ha.clusterId" -}}
{{- default (include "flink-ha.fullname" .) .Values.highAvailability.clusterId }}
{{- end }}

{{/* The first port of a port or "low-high" range: the Service's initial port before port-sync corrects it. */}}
{{- define "flink-ha.firstPort" -}}
{{- first (splitList "-" (toString .)) | int }}
{{- end }}

{{/* The last port of a port or "low-high" range. */}}
{{- define "flink-ha.lastPort" -}}
{{- last (splitList "-" (toString .)) | int }}
{{- end }}

{{/* The path of a file:// storageDir, else empty. */}}
{{- define "flink-ha.storagePath" -}}
{{- $dir := toString .Values.highAvailability.storageDir }}
{{- if hasPrefix "file://" $dir }}
{{- trimPrefix "file://" $dir }}
{{- end }}
{{- end }}

{{- define "flink-ha.labels" -}}
helm.sh/chart: {{ include "flink-ha.chart" . }}
{{ include "flink-ha.selectorLabels" . }}
{{- with include "flink-ha.versionLabel" . }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "flink-ha.name" . }}
{{- end }}

{{- define "flink-ha.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flink-ha.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component. Call with (list $ "jobmanager"). */}}
{{- define "flink-ha.componentLabels" -}}
{{ include "flink-ha.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "flink-ha.componentSelectorLabels" -}}
{{ include "flink-ha.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
app.kubernetes.io/version: Flink's image tag made a valid label value (at most 63 characters
of [A-Za-z0-9_.-], alphanumeric at both ends): a tag may be 128 characters long and, when a
user pins a digest the old way, hold `@` and `:`, which the API server refuses in a label.
Empty (and the label left out) when nothing of the tag remains.
*/}}
{{- define "flink-ha.versionLabel" -}}
{{- regexReplaceAll "[^-A-Za-z0-9_.]" (toString .Values.image.tag) "_" | trunc 63 | trimAll "-_." }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: "repository@digest" when a digest is set
(the tag is then ignored, as in Bitnami's common.images.image: the digest alone decides what
runs), else "repository:tag". Call with (list repository tag digest).
*/}}
{{- define "flink-ha.imageReference" -}}
{{- $repository := index . 0 }}
{{- $digest := index . 2 }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (index . 1) }}
{{- end }}
{{- end }}

{{/*
A label selector for this release's pods of the given components. Call with
(list $ (list "jobmanager" "taskmanager")).
*/}}
{{- define "flink-ha.flinkPodsSelector" -}}
matchLabels:
  {{- include "flink-ha.selectorLabels" (index . 0) | nindent 2 }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values:
      {{- toYaml (index . 1) | nindent 6 }}
{{- end }}

{{- define "flink-ha.flinkImage" -}}
{{- include "flink-ha.imageReference" (list .Values.image.repository .Values.image.tag .Values.image.digest) }}
{{- end }}

{{- define "flink-ha.sidecarImage" -}}
{{- include "flink-ha.imageReference" (list .Values.sidecars.image.repository (default .Chart.AppVersion .Values.sidecars.image.tag) .Values.sidecars.image.digest) }}
{{- end }}

{{- define "flink-ha.zookeeperImage" -}}
{{- include "flink-ha.imageReference" (list .Values.zookeeper.image.repository .Values.zookeeper.image.tag .Values.zookeeper.image.digest) }}
{{- end }}

{{/*
The security context of every container: not root, read-only root file system, no
capabilities, no privilege escalation, the runtime's default seccomp profile. Call with the
user ID. Set on each container (not only the pod) so that it holds for each on its own.
*/}}
{{- define "flink-ha.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The pod security context. Call with the group ID that owns the pod's volumes. */}}
{{- define "flink-ha.podSecurityContext" -}}
runAsNonRoot: true
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The zk-wait init container. */}}
{{- define "flink-ha.zkWaitContainer" -}}
- name: zk-wait
  image: {{ include "flink-ha.sidecarImage" . }}
  imagePullPolicy: {{ .Values.sidecars.image.pullPolicy }}
  command: ["zk-wait"]
  args:
    - --zookeeper
    - {{ include "flink-ha.zookeeperQuorum" . | quote }}
    - --require
    - {{ .Values.sidecars.zkWait.require | quote }}
    {{- with .Values.sidecars.zkWait.timeout }}
    - --timeout
    - {{ . | quote }}
    {{- end }}
    - --log-format
    - {{ .Values.sidecars.zkWait.logFormat | quote }}
  resources:
    {{- toYaml .Values.sidecars.zkWait.resources | nindent 4 }}
  securityContext:
    {{- include "flink-ha.containerSecurityContext" .Values.sidecars.uid | nindent 4 }}
{{- end }}

{{/*
The service-account token, projected into port-sync's container alone. The pod itself does
not automount a token (automountServiceAccountToken: false), so the Flink container, which
runs user code, never holds the credentials that may patch the Service. The three sources are
what the automatic mount holds, at the path kube's in-cluster config reads.
*/}}
{{- define "flink-ha.tokenVolume" -}}
- name: port-sync-token
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end }}

{{- define "flink-ha.tokenMount" -}}
- name: port-sync-token
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}

{{/* Flink keys the chart derives from its own values; flinkConfiguration may not set them. */}}
{{- define "flink-ha.ownedFlinkKeys" -}}
high-availability.type: highAvailability (always zookeeper)
high-availability.zookeeper.quorum: zookeeper.external.quorum
high-availability.storageDir: highAvailability.storageDir
high-availability.cluster-id: highAvailability.clusterId
high-availability.zookeeper.path.root: highAvailability.zookeeperPathRoot
high-availability.jobmanager.port: highAvailability.jobManagerPort
blob.server.port: blobServerPort
jobmanager.rpc.address: jobmanager.rpcAddress
rest.port: service.restPort
jobmanager.memory.process.size: jobmanager.memoryProcessSize
taskmanager.memory.process.size: taskmanager.memoryProcessSize
{{- end }}

{{/*
The Flink configuration file: the chart's keys, then flinkConfiguration. config.yaml (Flink 2.x)
is real YAML: scalars quoted as strings (Flink converts them), lists and maps as YAML.
flink-conf.yaml (1.x) is read line by line as `key: value` and nothing is unquoted, so values
go in bare, lists as a;b and maps as k:v,k:v.
*/}}
{{- define "flink-ha.flinkConfigFile" -}}
{{- $owned := include "flink-ha.ownedFlinkKeys" . | fromYaml }}
{{- range $key, $_ := .Values.flinkConfiguration }}
{{- if hasKey $owned $key }}
{{- fail (printf "flinkConfiguration.%s is set by the chart: set %s instead" $key (get $owned $key)) }}
{{- end }}
{{- end }}
{{- $config := dict
  "high-availability.type" "zookeeper"
  "high-availability.zookeeper.quorum" (include "flink-ha.zookeeperQuorum" .)
  "high-availability.storageDir" (toString .Values.highAvailability.storageDir)
  "high-availability.cluster-id" (include "flink-ha.clusterId" .)
  "high-availability.zookeeper.path.root" .Values.highAvailability.zookeeperPathRoot
  "high-availability.jobmanager.port" (toString .Values.highAvailability.jobManagerPort)
  "blob.server.port" (toString .Values.blobServerPort)
  "rest.port" (toString .Values.service.restPort)
  "jobmanager.memory.process.size" .Values.jobmanager.memoryProcessSize
  "taskmanager.memory.process.size" .Values.taskmanager.memoryProcessSize
  "jobmanager.bind-host" "0.0.0.0"
  "taskmanager.bind-host" "0.0.0.0"
  "rest.bind-address" "0.0.0.0"
}}
{{- if eq .Values.jobmanager.rpcAddress "service" }}
{{- $_ := set $config "jobmanager.rpc.address" (include "flink-ha.jobmanagerService" .) }}
{{- $_ := set $config "rest.address" (include "flink-ha.jobmanagerService" .) }}
{{- end }}
{{- range $key, $value := .Values.flinkConfiguration }}
{{- $_ := set $config $key $value }}
{{- end }}
{{- $legacy := eq .Values.flinkConfigFile "flink-conf.yaml" }}
{{- range $key := keys $config | sortAlpha }}
{{- $value := get $config $key }}
{{- if $legacy }}
{{- if kindIs "slice" $value }}
{{ $key }}: {{ join ";" $value }}
{{- else if kindIs "map" $value }}
{{- $pairs := list }}
{{- range $k, $v := $value }}{{ $pairs = append $pairs (printf "%s:%v" $k $v) }}{{ end }}
{{ $key }}: {{ join "," $pairs }}
{{- else }}
{{ $key }}: {{ $value }}
{{- end }}
{{- else }}
{{- if or (kindIs "slice" $value) (kindIs "map" $value) }}
{{ $key }}:
  {{- toYaml $value | nindent 2 }}
{{- else }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
