/* BTF fixture (tests/test_objfile.py): one use of every BTF kind clang emits — int, ptr,
 * array, struct, union, bitfields (kind_flag), enum, enum64, fwd, typedef, volatile, const,
 * restrict, func (static/global), func_proto, var, datasec, float, decl_tag, type_tag. */
#define SEC(name) __attribute__((section(name), used))
#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __user __attribute__((btf_type_tag("user")))

typedef unsigned int u32;
enum color { RED, GREEN = 5, BLUE = -1 };
enum big { SMALL = 1, HUGE = 0x123456789aULL };
struct opaque;

union number {
	long long i;
	double d;
};

struct shape {
	u32 kind : 3;
	unsigned int flags : 5;
	int pad;
	enum color color;
	enum big size;
	union number area;
	const volatile char name[6];
	struct opaque *next;
	int __user *user_ptr;
	float ratio;
} __tag("shape_tag");

struct shape global_shape __tag("var_tag");
const int answer = 42;

static __attribute__((noinline)) int helper(struct shape *restrict s __tag("param_tag"))
{
	return s->kind + s->flags + s->color;
}

SEC("syscall")
int use_all(struct shape *s)
{
	return helper(s) + s->area.i + answer + global_shape.pad + (s->user_ptr != 0) + (s->next != 0);
}

char LICENSE[] SEC("license") = "GPL";
