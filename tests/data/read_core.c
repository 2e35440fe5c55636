/* Object-reader fixture (tests/test_objfile.py): CO-RE relocations in .BTF.ext (field offset,
 * existence and size of a kernel struct's members, read through preserve_access_index). */
#define SEC(name) __attribute__((section(name), used))

struct task_like {
	int pid;
	long state;
	char comm[16];
} __attribute__((preserve_access_index));

SEC("tp/sched/sched_switch")
int core_prog(struct task_like *t)
{
	int exists = __builtin_preserve_field_info(t->state, 2 /* field_exists */);
	return t->pid + exists + __builtin_preserve_field_info(t->comm, 1 /* field_byte_size */);
}

char LICENSE[] SEC("license") = "GPL";
