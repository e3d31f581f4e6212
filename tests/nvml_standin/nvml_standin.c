/*
 * A stand-in libnvidia-ml.so.1 for mlcost's tests: the NVML C API calls that mlcost's NvmlBackend
 * makes through nvidia-ml-py (pynvml), with NVML's symbol names, signatures, struct layouts and
 * return codes as declared in nvml.h (CUDA 13 era), driven by the same trace CSVs as the simulated
 * backend (mlcost/telemetry/simulated_nvml.py, whose model this mirrors value for value).
 *
 * Written for mlcost from the declarations in nvml.h; nothing here is NVIDIA code. Only the calls
 * below are exported (-fvisibility=hidden): a binding that asks for another symbol, or a _v2 name
 * spelled wrong, gets NVML_ERROR_FUNCTION_NOT_FOUND from pynvml, as with an old driver.
 *
 * Configuration, read by nvmlInitWithFlags / nvmlInit_v2:
 *   MLCOST_NVML_STANDIN_TRACE          CSV: t_s,device,util_pct,mem_used_gb,power_w
 *                                      [,sm_active_pct,tensor_active_pct,event]
 *   MLCOST_NVML_STANDIN_GPU            H100 (GPM), H200 (GPM), A100-80GB, A100-40GB, L4, T4,
 *                                      P100 (no energy counter, no MIG); default H100
 *   MLCOST_NVML_STANDIN_DEVICES        physical GPUs, default 1
 *   MLCOST_NVML_STANDIN_MIG            profiles created on each MIG GPU, e.g. "1g.10gb,3g.40gb"
 *   MLCOST_NVML_STANDIN_MIG_GPUS       which GPUs have MIG on, e.g. "0" (default: all)
 *   MLCOST_NVML_STANDIN_NOT_SUPPORTED  NVML function names that return NVML_ERROR_NOT_SUPPORTED
 *   MLCOST_NVML_STANDIN_LOST           "key:t,...": GPU_IS_LOST from trace time t (key: the GPU
 *                                      index, or the trace device of a MIG instance)
 *   MLCOST_NVML_STANDIN_INIT_ERROR     an NVML return code (e.g. 9, DRIVER_NOT_LOADED) for init
 * Trace time is seconds since the first successful init on CLOCK_MONOTONIC (Python's
 * time.monotonic), unless a test sets it by hand with nvmlStandinSetTime (not an NVML symbol).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API __attribute__((visibility("default")))

/* nvml.h: nvmlReturn_t values */
typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_NO_PERMISSION = 4, NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6, NVML_ERROR_INSUFFICIENT_SIZE = 7, NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9, NVML_ERROR_TIMEOUT = 10, NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12, NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14, NVML_ERROR_GPU_IS_LOST = 15, NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17, NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18, NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20, NVML_ERROR_NO_DATA = 21, NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_DEPRECATED = 26, NVML_ERROR_NOT_READY = 27, NVML_ERROR_GPU_NOT_FOUND = 28,
    NVML_ERROR_INVALID_STATE = 29, NVML_ERROR_UNKNOWN = 999
};
enum { NVML_TEMPERATURE_GPU = 0 };
enum { NVML_CLOCK_SM = 1 };
enum { NVML_DEVICE_MIG_DISABLE = 0, NVML_DEVICE_MIG_ENABLE = 1 };
enum { NVML_GPM_METRIC_SM_UTIL = 2, NVML_GPM_METRIC_SM_OCCUPANCY = 3, NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5 };
#define NVML_GPM_METRIC_MAX 333 /* nvml.h's array bound; newer headers (pynvml's) are larger */
#define NVML_GPM_METRICS_GET_VERSION 1
#define NVML_GPM_SUPPORT_VERSION 1

/* nvml.h structs, field for field */
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int multiprocessorCount, sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount,
        sharedJpegCount, sharedOfaCount, gpuInstanceSliceCount, computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;
typedef struct { unsigned int version, isSupportedDevice; } nvmlGpmSupport_t;
typedef struct nvmlGpmSample_st *nvmlGpmSample_t;
typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    struct { char *shortName, *longName, *unit; } metricInfo;
} nvmlGpmMetric_t;
typedef struct {
    unsigned int version, numMetrics;
    nvmlGpmSample_t sample1, sample2;
    nvmlGpmMetric_t metrics[NVML_GPM_METRIC_MAX];
} nvmlGpmMetricsGet_t;
typedef struct nvmlDevice_st *nvmlDevice_t;

/* ---------------------------------------------------------------------------------------------- */
/* the model                                                                                      */

#define MAX_GPUS 64
#define MAX_MIG 7
#define HANDLE_MAGIC 0x4e564d4cu /* "NVML" */
#define SAMPLE_MAGIC 0x47504d53u /* "GPMS" */
#define OFFSET_MJ 987654321ULL

struct nvmlDevice_st { unsigned int magic; int gpu, mig, ordinal; };  /* mig -1: a physical GPU */
struct nvmlGpmSample_st { unsigned int magic; int taken; struct nvmlDevice_st *dev; double t; };

typedef struct { double t, util, mem, power, sm, tensor; } Row;  /* sm, tensor: NAN when absent */
typedef struct { Row *rows; int n, cap; double lost_at; } Series;

typedef struct {
    const char *key, *name;
    double board_w, mem_gb;
    int gpm, energy, mig_capable;
} Model;

static const Model MODELS[] = {
    {"H100", "NVIDIA H100 80GB HBM3", 700, 80, 1, 1, 1},
    {"H200", "NVIDIA H200", 700, 141, 1, 1, 1},
    {"A100-80GB", "NVIDIA A100-SXM4-80GB", 400, 80, 0, 1, 1},
    {"A100-40GB", "NVIDIA A100-SXM4-40GB", 400, 40, 0, 1, 1},
    {"L4", "NVIDIA L4", 72, 24, 0, 1, 0},
    {"T4", "Tesla T4", 70, 16, 0, 1, 0},
    {"P100", "Tesla P100-PCIE-16GB", 250, 16, 0, 0, 0},
};

static struct {
    int initialized, refs, configured;
    const Model *model;
    int devices, mig_count, mig_on[MAX_GPUS];
    char mig[MAX_MIG][32];
    struct nvmlDevice_st gpus[MAX_GPUS], migs[MAX_GPUS][MAX_MIG];
    Series *series;  /* per trace device */
    int n_series;
    char not_supported[2048];
    double start, manual_t;
    int manual;
} S;

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now(void) { return S.manual ? S.manual_t : monotonic() - S.start; }

static Series *series_for(int device) {
    if (device >= S.n_series) {
        int n = device + 1;
        S.series = realloc(S.series, n * sizeof(Series));
        for (int i = S.n_series; i < n; i++) S.series[i] = (Series){NULL, 0, 0, INFINITY};
        S.n_series = n;
    }
    return &S.series[device];
}

static double parse_opt(const char *s) { return (s && *s) ? strtod(s, NULL) : NAN; }

/* The trace CSV; the Python reader (mlcost.telemetry.traces.read_csv) validates the same file. */
static int load_trace(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int col[8];
    const char *names[8] = {"t_s", "device", "util_pct", "mem_used_gb", "power_w",
                            "sm_active_pct", "tensor_active_pct", "event"};
    for (int i = 0; i < 8; i++) col[i] = -1;
    if (!fgets(line, sizeof line, f)) { fclose(f); return -1; }
    int c = 0;
    for (char *tok = strtok(line, ",\r\n"); tok; tok = strtok(NULL, ",\r\n"), c++) {
        while (*tok == ' ') tok++;
        for (int i = 0; i < 8; i++) if (strcmp(tok, names[i]) == 0) col[i] = c;
    }
    for (int i = 0; i < 5; i++) if (col[i] < 0) { fclose(f); return -1; }
    while (fgets(line, sizeof line, f)) {
        char *fields[16] = {0};
        int n = 0;
        char *p = line;
        while (n < 16) {  /* strsep keeps empty fields, which strtok would drop */
            char *tok = strsep(&p, ",\r\n");
            if (!tok) break;
            fields[n++] = tok;
        }
        if (n < 5 || !fields[col[0]] || !*fields[col[0]]) continue;
        Series *s = series_for(atoi(fields[col[1]]));
        double t = strtod(fields[col[0]], NULL);
        if (col[7] >= 0 && col[7] < n && strcmp(fields[col[7]], "lost") == 0) {
            if (t < s->lost_at) s->lost_at = t;
            continue;
        }
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 16;
            s->rows = realloc(s->rows, s->cap * sizeof(Row));
        }
        s->rows[s->n++] = (Row){t, strtod(fields[col[2]], NULL), strtod(fields[col[3]], NULL),
                               strtod(fields[col[4]], NULL),
                               col[5] >= 0 && col[5] < n ? parse_opt(fields[col[5]]) : NAN,
                               col[6] >= 0 && col[6] < n ? parse_opt(fields[col[6]]) : NAN};
    }
    fclose(f);
    return 0;
}

static void configure(void) {
    const char *gpu = getenv("MLCOST_NVML_STANDIN_GPU");
    S.model = &MODELS[0];
    for (size_t i = 0; gpu && i < sizeof MODELS / sizeof MODELS[0]; i++)
        if (strcmp(gpu, MODELS[i].key) == 0) S.model = &MODELS[i];
    const char *dev = getenv("MLCOST_NVML_STANDIN_DEVICES");
    S.devices = dev ? atoi(dev) : 1;
    if (S.devices < 0) S.devices = 0;
    if (S.devices > MAX_GPUS) S.devices = MAX_GPUS;
    S.mig_count = 0;
    const char *mig = getenv("MLCOST_NVML_STANDIN_MIG");
    if (mig && *mig && S.model->mig_capable) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s", mig);
        for (char *tok = strtok(buf, ","); tok && S.mig_count < MAX_MIG; tok = strtok(NULL, ","))
            snprintf(S.mig[S.mig_count++], sizeof S.mig[0], "%s", tok);
    }
    const char *mig_gpus = getenv("MLCOST_NVML_STANDIN_MIG_GPUS");
    for (int g = 0; g < MAX_GPUS; g++) S.mig_on[g] = S.mig_count > 0 && !mig_gpus;
    if (mig_gpus && S.mig_count) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", mig_gpus);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
            if (atoi(tok) >= 0 && atoi(tok) < MAX_GPUS) S.mig_on[atoi(tok)] = 1;
    }
    int ordinal = 0;  /* trace device k drives the k-th MIG instance, parent-major, as simulated */
    for (int g = 0; g < S.devices; g++) {
        S.gpus[g] = (struct nvmlDevice_st){HANDLE_MAGIC, g, -1, g};
        for (int j = 0; j < S.mig_count; j++)
            S.migs[g][j] = (struct nvmlDevice_st){HANDLE_MAGIC, g, j, S.mig_on[g] ? ordinal++ : -1};
    }
    for (int i = 0; i < S.n_series; i++) free(S.series[i].rows);
    free(S.series);
    S.series = NULL;
    S.n_series = 0;
    const char *trace = getenv("MLCOST_NVML_STANDIN_TRACE");
    if (trace && *trace && load_trace(trace) != 0)
        fprintf(stderr, "nvml stand-in: cannot read the trace %s\n", trace);
    const char *lost = getenv("MLCOST_NVML_STANDIN_LOST");
    if (lost && *lost) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s", lost);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
            char *colon = strchr(tok, ':');
            if (colon) series_for(atoi(tok))->lost_at = strtod(colon + 1, NULL);
        }
    }
    const char *ns = getenv("MLCOST_NVML_STANDIN_NOT_SUPPORTED");
    snprintf(S.not_supported, sizeof S.not_supported, ",%s,", ns ? ns : "");
    S.configured = 1;
}

/* the row in force at t: the first row also covers the time before it, the last holds forever */
static const Row *row_at(int device, double t) {
    if (device < 0 || device >= S.n_series || S.series[device].n == 0) return NULL;
    const Series *s = &S.series[device];
    int i = 0;
    while (i + 1 < s->n && s->rows[i + 1].t <= t) i++;
    return &s->rows[i];
}

typedef double (*Field)(const Row *);
static double f_power(const Row *r) { return r->power; }
static double f_sm(const Row *r) { return isnan(r->sm) ? r->util : r->sm; }
static double f_tensor(const Row *r) { return isnan(r->tensor) ? 0.0 : r->tensor; }

/* exact integral from 0 to t of a step function (mlcost.telemetry.traces._Antiderivative) */
static double antiderivative(int device, Field f, double t) {
    if (device < 0 || device >= S.n_series || S.series[device].n == 0) return 0.0;
    const Series *s = &S.series[device];
    double total = f(&s->rows[0]) * s->rows[0].t;
    int i = 0;
    for (; i + 1 < s->n && s->rows[i + 1].t <= t; i++) total += f(&s->rows[i]) * (s->rows[i + 1].t - s->rows[i].t);
    return total + f(&s->rows[i]) * (t - s->rows[i].t);
}

static double mean(int device, Field f, double t0, double t1) {
    if (t1 <= t0) {
        const Row *r = row_at(device, t0);
        return r ? f(r) : 0.0;
    }
    return (antiderivative(device, f, t1) - antiderivative(device, f, t0)) / (t1 - t0);
}

static Row untraced(void) { return (Row){0, 0, 0, 0.12 * S.model->board_w, NAN, NAN}; }

static Row row_of(int device, double t) {
    const Row *r = row_at(device, t);
    return r ? *r : untraced();
}

/* trace devices whose power a handle draws: a MIG parent draws all its instances' */
static int members(const struct nvmlDevice_st *h, int *out) {
    if (h->mig < 0 && S.mig_on[h->gpu]) {
        for (int j = 0; j < S.mig_count; j++) out[j] = S.migs[h->gpu][j].ordinal;
        return S.mig_count;
    }
    out[0] = h->ordinal;
    return 1;
}

static int valid(nvmlDevice_t h) {
    if (!h || h->magic != HANDLE_MAGIC || h->gpu < 0 || h->gpu >= S.devices) return 0;
    return h->mig < 0 || (S.mig_on[h->gpu] && h->mig < S.mig_count);
}

static int not_supported(const char *fn) {
    char key[128];
    snprintf(key, sizeof key, ",%s,", fn);
    return strstr(S.not_supported, key) != NULL;
}

/* the checks every device call starts with, in NVML's order */
static nvmlReturn_t check(const char *fn, nvmlDevice_t h, const void *out) {
    if (!S.initialized) return NVML_ERROR_UNINITIALIZED;
    if (!valid(h) || !out) return NVML_ERROR_INVALID_ARGUMENT;
    int key = h->mig < 0 ? h->gpu : h->ordinal;  /* as simulated: the GPU index, or the instance's trace device */
    if (key < S.n_series && now() >= S.series[key].lost_at) return NVML_ERROR_GPU_IS_LOST;
    if (not_supported(fn)) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

/* a call that NVML does not support on a MIG device handle (util, power, energy, clocks...) */
static nvmlReturn_t check_physical(const char *fn, nvmlDevice_t h, const void *out) {
    nvmlReturn_t rc = check(fn, h, out);
    if (rc == NVML_SUCCESS && h->mig >= 0) return NVML_ERROR_NOT_SUPPORTED;
    return rc;
}

static unsigned long long mem_total(nvmlDevice_t h) {
    if (h->mig < 0) return (unsigned long long)(S.model->mem_gb * 1e9);
    const char *gb = strchr(S.mig[h->mig], '.');  /* "3g.40gb" */
    return (unsigned long long)((gb ? atof(gb + 1) : 0) * 1e9);
}

static int slices(nvmlDevice_t h) { return h->mig < 0 ? 7 : atoi(S.mig[h->mig]); }

static nvmlReturn_t copy_string(char *dst, unsigned int length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------------------------------------- */
/* the exported API                                                                               */

API void nvmlStandinSetTime(double t) { S.manual = 1; S.manual_t = t; }  /* tests only */
API double nvmlStandinTraceTime(void) { return now(); }                   /* tests only */

/* nvml.h's layouts as this compiler lays them out, for the test that holds pynvml's ctypes
 * structs to them (sizes, and the offsets a wrong field order or type would move); -1: unknown */
API long nvmlStandinLayout(const char *what) {
    static const struct { const char *name; long value; } L[] = {
        {"nvmlMemory_t", sizeof(nvmlMemory_t)},
        {"nvmlMemory_t.used", offsetof(nvmlMemory_t, used)},
        {"nvmlUtilization_t", sizeof(nvmlUtilization_t)},
        {"nvmlDeviceAttributes_t", sizeof(nvmlDeviceAttributes_t)},
        {"nvmlDeviceAttributes_t.gpuInstanceSliceCount", offsetof(nvmlDeviceAttributes_t, gpuInstanceSliceCount)},
        {"nvmlDeviceAttributes_t.memorySizeMB", offsetof(nvmlDeviceAttributes_t, memorySizeMB)},
        {"nvmlGpmSupport_t", sizeof(nvmlGpmSupport_t)},
        {"nvmlGpmMetric_t", sizeof(nvmlGpmMetric_t)},
        {"nvmlGpmMetric_t.nvmlReturn", offsetof(nvmlGpmMetric_t, nvmlReturn)},
        {"nvmlGpmMetric_t.value", offsetof(nvmlGpmMetric_t, value)},
        {"nvmlGpmMetric_t.metricInfo", offsetof(nvmlGpmMetric_t, metricInfo)},
        {"nvmlGpmMetricsGet_t.sample1", offsetof(nvmlGpmMetricsGet_t, sample1)},
        {"nvmlGpmMetricsGet_t.sample2", offsetof(nvmlGpmMetricsGet_t, sample2)},
        {"nvmlGpmMetricsGet_t.metrics", offsetof(nvmlGpmMetricsGet_t, metrics)},
    };
    for (size_t i = 0; what && i < sizeof L / sizeof L[0]; i++)
        if (strcmp(what, L[i].name) == 0) return L[i].value;
    return -1;
}

API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    const char *err = getenv("MLCOST_NVML_STANDIN_INIT_ERROR");
    if (err && *err && atoi(err) != 0) return (nvmlReturn_t)atoi(err);
    if (!S.initialized) {
        configure();
        if (!S.manual && S.refs == 0 && S.start == 0.0) S.start = monotonic();
    }
    S.initialized = 1;
    S.refs++;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

API nvmlReturn_t nvmlShutdown(void) {
    if (!S.initialized) return NVML_ERROR_UNINITIALIZED;
    if (--S.refs == 0) S.initialized = 0;
    return NVML_SUCCESS;
}

API const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (!S.initialized) return NVML_ERROR_UNINITIALIZED;
    return copy_string(version, length, "mlcost-nvml-standin");
}

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    if (!S.initialized) return NVML_ERROR_UNINITIALIZED;
    if (!deviceCount) return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = (unsigned int)S.devices;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!S.initialized) return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= (unsigned int)S.devices) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &S.gpus[index];
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    nvmlReturn_t rc = check("nvmlDeviceGetUUID", device, uuid);
    if (rc) return rc;
    char buf[96];
    if (device->mig < 0)
        snprintf(buf, sizeof buf, "GPU-5e1f%04x-aaaa-4bbb-8ccc-%012x", device->gpu, device->gpu);
    else
        snprintf(buf, sizeof buf, "MIG-7a1c%02x%02x-dddd-4eee-8fff-%012x", device->gpu, device->mig, device->ordinal);
    return copy_string(uuid, length, buf);
}

API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    nvmlReturn_t rc = check("nvmlDeviceGetName", device, name);
    if (rc) return rc;
    char buf[96];
    if (device->mig < 0) snprintf(buf, sizeof buf, "%s", S.model->name);
    else snprintf(buf, sizeof buf, "%s MIG %s", S.model->name, S.mig[device->mig]);
    return copy_string(name, length, buf);
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    nvmlReturn_t rc = check("nvmlDeviceGetMemoryInfo", device, memory);
    if (rc) return rc;
    int m[MAX_MIG];
    int n = members(device, m);
    double t = now(), used_gb = 0;
    for (int i = 0; i < n; i++) used_gb += row_of(m[i], t).mem;
    unsigned long long total = mem_total(device), used = (unsigned long long)(used_gb * 1e9);
    if (used > total) used = total;
    *memory = (nvmlMemory_t){total, total - used, used};
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetUtilizationRates", device, utilization);
    if (rc) return rc;
    unsigned int util = (unsigned int)lround(row_of(device->ordinal, now()).util);
    *utilization = (nvmlUtilization_t){util, (unsigned int)lround(util * 0.4)};
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetPowerUsage", device, power);
    if (rc) return rc;
    int m[MAX_MIG];
    int n = members(device, m);
    double t = now(), watts = 0;
    for (int i = 0; i < n; i++) watts += row_of(m[i], t).power;
    *power = (unsigned int)lround(watts * 1000);  /* milliwatts */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetTotalEnergyConsumption", device, energy);
    if (rc) return rc;
    if (!S.model->energy) return NVML_ERROR_NOT_SUPPORTED;  /* pre-Volta */
    int m[MAX_MIG];
    int n = members(device, m);
    double t = now(), joules = 0;
    for (int i = 0; i < n; i++) joules += antiderivative(m[i], f_power, t) - antiderivative(m[i], f_power, 0);
    *energy = OFFSET_MJ + 1000ULL * device->gpu + (unsigned long long)(joules * 1000);  /* mJ since "driver load" */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensorType, unsigned int *temp) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetTemperature", device, temp);
    if (rc) return rc;
    if (sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = (unsigned int)lround(35 + 45 * row_of(device->ordinal, now()).util / 100);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetClockInfo", device, clock);
    if (rc) return rc;
    if (type < 0 || type > 3) return NVML_ERROR_INVALID_ARGUMENT;
    *clock = row_of(device->ordinal, now()).util > 0 ? 1980 : 345;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetEnforcedPowerLimit", device, limit);
    if (rc) return rc;
    *limit = (unsigned int)(S.model->board_w * 1000);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes) {
    nvmlReturn_t rc = check("nvmlDeviceGetAttributes_v2", device, attributes);
    if (rc) return rc;
    unsigned int n = (unsigned int)slices(device);
    *attributes = (nvmlDeviceAttributes_t){n * 16, 1, 1, 0, 0, 0, n, n, mem_total(device) / 1048576ULL};
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetMigMode", device, currentMode);
    if (rc) return rc;
    if (!pendingMode) return NVML_ERROR_INVALID_ARGUMENT;
    if (!S.model->mig_capable) return NVML_ERROR_NOT_SUPPORTED;
    *currentMode = *pendingMode = S.mig_on[device->gpu] ? NVML_DEVICE_MIG_ENABLE : NVML_DEVICE_MIG_DISABLE;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetMaxMigDeviceCount", device, count);
    if (rc) return rc;
    *count = S.mig_on[device->gpu] ? MAX_MIG : 0;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index, nvmlDevice_t *migDevice) {
    nvmlReturn_t rc = check_physical("nvmlDeviceGetMigDeviceHandleByIndex", device, migDevice);
    if (rc) return rc;
    if (!S.mig_on[device->gpu]) return NVML_ERROR_NOT_SUPPORTED;
    if (index >= MAX_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= (unsigned int)S.mig_count) return NVML_ERROR_NOT_FOUND;
    *migDevice = &S.migs[device->gpu][index];
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    nvmlReturn_t rc = check("nvmlDeviceGetGpuInstanceId", device, id);
    if (rc) return rc;
    if (device->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *id = (unsigned int)device->mig + 1;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    nvmlReturn_t rc = check("nvmlDeviceGetComputeInstanceId", device, id);
    if (rc) return rc;
    if (device->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *id = 0;
    return NVML_SUCCESS;
}

/* GPM (Hopper and newer) ----------------------------------------------------------------------- */

API nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t device, nvmlGpmSupport_t *gpmSupport) {
    nvmlReturn_t rc = check("nvmlGpmQueryDeviceSupport", device, gpmSupport);
    if (rc) return rc;
    if (gpmSupport->version != NVML_GPM_SUPPORT_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    gpmSupport->isSupportedDevice = (unsigned int)S.model->gpm;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *gpmSample) {
    if (!S.initialized) return NVML_ERROR_UNINITIALIZED;
    if (!gpmSample) return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlGpmSample_st *s = calloc(1, sizeof *s);
    if (!s) return NVML_ERROR_MEMORY;
    s->magic = SAMPLE_MAGIC;
    *gpmSample = s;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t gpmSample) {
    if (!S.initialized) return NVML_ERROR_UNINITIALIZED;
    if (!gpmSample || gpmSample->magic != SAMPLE_MAGIC) return NVML_ERROR_INVALID_ARGUMENT;
    gpmSample->magic = 0;
    free(gpmSample);
    return NVML_SUCCESS;
}

static nvmlReturn_t take(nvmlDevice_t dev, nvmlGpmSample_t s) {
    if (!s || s->magic != SAMPLE_MAGIC) return NVML_ERROR_INVALID_ARGUMENT;
    if (!S.model->gpm) return NVML_ERROR_NOT_SUPPORTED;
    s->dev = dev;
    s->t = now();
    s->taken = 1;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t device, nvmlGpmSample_t gpmSample) {
    nvmlReturn_t rc = check("nvmlGpmSampleGet", device, gpmSample);
    return rc ? rc : take(device, gpmSample);
}

API nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t device, unsigned int gpuInstanceId, nvmlGpmSample_t gpmSample) {
    nvmlReturn_t rc = check_physical("nvmlGpmMigSampleGet", device, gpmSample);
    if (rc) return rc;
    if (!S.mig_on[device->gpu]) return NVML_ERROR_NOT_SUPPORTED;
    if (gpuInstanceId < 1 || gpuInstanceId > (unsigned int)S.mig_count) return NVML_ERROR_NOT_FOUND;
    return take(&S.migs[device->gpu][gpuInstanceId - 1], gpmSample);
}

API nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *metricsGet) {
    if (!S.initialized) return NVML_ERROR_UNINITIALIZED;
    if (!metricsGet) return NVML_ERROR_INVALID_ARGUMENT;
    if (metricsGet->version != NVML_GPM_METRICS_GET_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    nvmlGpmSample_t s1 = metricsGet->sample1, s2 = metricsGet->sample2;
    if (metricsGet->numMetrics > NVML_GPM_METRIC_MAX || !s1 || !s2 || s1->magic != SAMPLE_MAGIC ||
        s2->magic != SAMPLE_MAGIC || !s1->taken || !s2->taken || s1->dev != s2->dev)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t rc = check("nvmlGpmMetricsGet", s2->dev, metricsGet);
    if (rc) return rc;
    if (!S.model->gpm) return NVML_ERROR_NOT_SUPPORTED;
    int device = s2->dev->ordinal;
    Row at = row_of(device, s2->t);
    for (unsigned int i = 0; i < metricsGet->numMetrics; i++) {
        nvmlGpmMetric_t *m = &metricsGet->metrics[i];
        m->metricInfo.shortName = m->metricInfo.longName = NULL;
        m->metricInfo.unit = "%";
        m->nvmlReturn = NVML_SUCCESS;
        switch (m->metricId) {
        case NVML_GPM_METRIC_SM_UTIL:
            m->value = mean(device, f_sm, s1->t, s2->t);
            m->metricInfo.shortName = "sm_util";
            m->metricInfo.longName = "SM Utilization";
            break;
        case NVML_GPM_METRIC_SM_OCCUPANCY:
            m->value = 0.5 * mean(device, f_sm, s1->t, s2->t);
            m->metricInfo.shortName = "sm_occupancy";
            m->metricInfo.longName = "SM Occupancy";
            break;
        case NVML_GPM_METRIC_ANY_TENSOR_UTIL:
            if (isnan(at.tensor)) {
                m->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
                m->value = 0;
            } else {
                m->value = mean(device, f_tensor, s1->t, s2->t);
                m->metricInfo.shortName = "any_tensor_util";
                m->metricInfo.longName = "Any Tensor Utilization";
            }
            break;
        default:
            m->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
            m->value = 0;
            m->metricInfo.unit = NULL;
        }
    }
    return NVML_SUCCESS;
}
