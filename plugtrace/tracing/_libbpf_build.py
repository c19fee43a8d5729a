"""cffi build script (API mode) for plugtrace's binding of the system libbpf.

libbpf is the kernel's own loader library: it opens our compiled programs
(probes/build/*.bpf.o), relocates their struct accesses to the running
kernel (CO-RE), creates their maps and ring buffers, loads and attaches them.
The binding declares the few functions `libbpf.py` uses, plus small C helpers
for what libbpf leaves to generated skeletons or static inlines: setting a
``const volatile`` global before load, reading an enum or finding a type in
the kernel's BTF, and keeping libbpf's messages (the verifier's log among
them) for the error a user sees.

The event records are declared from probes/records.h, the header the
programs include, so cffi checks the layout against the C compiler and the
numpy dtypes of the ring readers come from the same text.
"""

from pathlib import Path

from cffi import FFI

PROBES = Path(__file__).resolve().parents[2] / "probes"
RECORDS = (PROBES / "records.h").read_text()

CDEF = r"""
struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;
struct btf;
struct bpf_object_open_opts;

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);

const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__set_attach_target(struct bpf_program *prog, int attach_prog_fd, const char *attach_func_name);
int bpf_program__fd(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach(const struct bpf_program *prog);
int bpf_link__destroy(struct bpf_link *link);

int bpf_map__fd(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, uint32_t max_entries);
uint32_t bpf_map__max_entries(const struct bpf_map *map);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);

int libbpf_num_possible_cpus(void);
const char *libbpf_version_string(void);
struct btf *btf__load_vmlinux_btf(void);
void btf__free(struct btf *btf);

/* helpers of ours */
void pt_log_capture(void);
const char *pt_log_text(void);
int pt_set_global(struct bpf_object *obj, const char *name, const void *value, size_t size);
int pt_btf_has_typedef(const struct btf *btf, const char *name);
int pt_btf_enum(const struct btf *btf, const char *name, const char **names, int64_t *values, int max);
""" + RECORDS.replace("#pragma once", "")

SOURCE = r"""
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "records.h"

/* libbpf's warnings (a verifier log is one) go here instead of stderr, for the error message */
static char pt_log[1 << 20];
static size_t pt_log_len;

static int pt_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
    if (level == LIBBPF_DEBUG || pt_log_len >= sizeof(pt_log) - 1)
        return 0;
    int n = vsnprintf(pt_log + pt_log_len, sizeof(pt_log) - pt_log_len, fmt, args);
    if (n > 0)
        pt_log_len += (size_t)n < sizeof(pt_log) - pt_log_len ? (size_t)n : sizeof(pt_log) - pt_log_len - 1;
    return 0;
}

/* Start keeping libbpf's messages (dropping what was kept). */
static void pt_log_capture(void)
{
    pt_log_len = 0;
    pt_log[0] = 0;
    libbpf_set_print(pt_print);
}

static const char *pt_log_text(void) { return pt_log; }

/* Set the `const volatile` global `name` of an opened, not yet loaded, object. */
static int pt_set_global(struct bpf_object *obj, const char *name, const void *value, size_t size)
{
    struct bpf_map *map = bpf_object__find_map_by_name(obj, ".rodata");
    const struct btf *btf = bpf_object__btf(obj);
    if (!map || !btf)
        return -ENOENT;
    int id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
    if (id < 0)
        return -ENOENT;
    const struct btf_type *sec = btf__type_by_id(btf, id);
    const struct btf_var_secinfo *v = btf_var_secinfos(sec);
    size_t data_size;
    /* writable until the object is loaded (what a skeleton writes its settings into) */
    char *data = (char *)bpf_map__initial_value(map, &data_size);
    for (int i = 0; i < btf_vlen(sec); i++, v++) {
        const struct btf_type *var = btf__type_by_id(btf, v->type);
        if (strcmp(btf__name_by_offset(btf, var->name_off), name) != 0)
            continue;
        if (v->size != size || !data || v->offset + size > data_size)
            return -EINVAL;
        memcpy(data + v->offset, value, size);
        return 0;
    }
    return -ENOENT;
}

static int pt_btf_has_typedef(const struct btf *btf, const char *name)
{
    return btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF) >= 0;
}

/* The members of enum `name` (at most `max`): returns how many, or -ENOENT. */
static int pt_btf_enum(const struct btf *btf, const char *name, const char **names, int64_t *values, int max)
{
    int id = btf__find_by_name_kind(btf, name, BTF_KIND_ENUM);
    if (id < 0)
        return -ENOENT;
    const struct btf_type *t = btf__type_by_id(btf, id);
    const struct btf_enum *e = btf_enum(t);
    int n = btf_vlen(t) < max ? btf_vlen(t) : max;
    for (int i = 0; i < n; i++, e++) {
        names[i] = btf__name_by_offset(btf, e->name_off);
        values[i] = btf_kflag(t) ? (int64_t)e->val : (int64_t)(uint32_t)e->val;
    }
    return n;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "plugtrace.tracing._libbpf",
    SOURCE,
    libraries=["bpf"],
    include_dirs=[str(PROBES)],
    extra_compile_args=["-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
