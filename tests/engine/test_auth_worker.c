/*
 * test_auth_worker.c - engine/eng_auth_worker: AUTH checks on the node's
 * worker thread. Start-up errors name file and line; answers come back
 * through the shard's eventfd with the right verdicts (authzid refusal
 * included); the queue is bounded (-EAGAIN while a slow hash holds it
 * full); a reload installs a new table and a bad one keeps the old.
 * Hashes are made here with crypt_rn (sha512-crypt, chosen rounds).
 */
#include <criterion/criterion.h>
#include <crypt.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/eng_auth_worker.h"
#include "engine/eng_config.h"

static char aw_dir[] = "/tmp/ringmail-auth-worker-XXXXXX";
static char aw_path[256];

static void
aw_setup(void)
{
	cr_assert_not_null(mkdtemp(aw_dir));
	snprintf(aw_path, sizeof(aw_path), "%s/auth.txt", aw_dir);
}

static void
aw_teardown(void)
{
	unlink(aw_path);
	rmdir(aw_dir);
}

static void
aw_hash(const char *password, const char *setting, char *out, size_t out_size)
{
	struct crypt_data *work = calloc(1, sizeof(*work));
	cr_assert_not_null(work);
	const char *h = crypt_rn(password, setting, work, (int)sizeof(*work));
	cr_assert(h != NULL && h[0] == '$', "crypt_rn failed for %s", setting);
	snprintf(out, out_size, "%s", h);
	free(work);
}

static void
aw_write(const char *text)
{
	FILE *f = fopen(aw_path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

/* A configuration with one listener "main" and the file (or none). */
static void
aw_config(struct eng_config *cfg, bool with_file)
{
	memset(cfg, 0, sizeof(*cfg));
	eng_config_default(cfg);
	cfg->listener_count = 1;
	snprintf(cfg->listeners[0].name, sizeof(cfg->listeners[0].name), "main");
	cfg->listeners[0].auth_file[0] = '\0';
	if (with_file)
		snprintf(cfg->listeners[0].auth_file, sizeof(cfg->listeners[0].auth_file), "%s",
			 aw_path);
}

static void
aw_job(struct eng_auth_job *job, const char *user, const char *password, bool refuse)
{
	memset(job, 0, sizeof(*job));
	job->shard_index = 0;
	job->listener_index = 0;
	job->refuse = refuse;
	job->user_len = (uint32_t)strlen(user);
	job->password_len = (uint32_t)strlen(password);
	memcpy(job->user, user, job->user_len);
	memcpy(job->password, password, job->password_len);
}

/* Collect `want` done jobs through the eventfd (30 s deadline). */
static uint32_t
aw_collect(struct eng_auth_worker *w, int fd, uint32_t want)
{
	uint32_t got = 0;
	for (int turn = 0; got < want && turn < 300; turn++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 100) <= 0)
			continue;
		for (struct eng_auth_job *j = eng_auth_worker_take(w, 0); j != NULL; j = j->next) {
			cr_assert_lt(j->password_len, 1u, "the password is wiped");
			got++;
		}
	}
	return got;
}

TestSuite(auth_worker, .init = aw_setup, .fini = aw_teardown);

Test(auth_worker, no_auth_file_no_thread)
{
	struct eng_config cfg;
	aw_config(&cfg, false);
	struct eng_auth_worker *w = (struct eng_auth_worker *)1;
	char err[512];
	cr_assert_eq(eng_auth_worker_create(&cfg, &w, err, sizeof(err)), 0);
	cr_assert_null(w);
	cr_assert(!eng_auth_worker_offers(NULL, 0));
	eng_config_free(&cfg);
}

Test(auth_worker, start_up_errors_name_file_and_line)
{
	struct eng_config cfg;
	aw_config(&cfg, true);
	struct eng_auth_worker *w = NULL;
	char err[512];
	cr_assert_lt(eng_auth_worker_create(&cfg, &w, err, sizeof(err)), 0, "missing file");
	cr_assert(strstr(err, "listener main: ") != NULL && strstr(err, aw_path) != NULL, "%s",
		  err);
	aw_write("# users\nu:$6$abc$def\nno colon\n");
	cr_assert_lt(eng_auth_worker_create(&cfg, &w, err, sizeof(err)), 0, "malformed line");
	cr_assert(strstr(err, "auth.txt:3: expected user:hash") != NULL, "%s", err);
	cr_assert_null(w);
	eng_config_free(&cfg);
}

Test(auth_worker, verdicts_bounded_queue_and_reload, .timeout = 60)
{
	char slow[256], fast[256], text[1024];
	/* ~0.1-0.3 s of CPU: holds the queue full while it is filled */
	aw_hash("slow pass", "$6$rounds=400000$aworkerslow", slow, sizeof(slow));
	aw_hash("fast pass", "$6$aworkerfast", fast, sizeof(fast));
	snprintf(text, sizeof(text), "slow:%s\nfast:%s\n", slow, fast);
	aw_write(text);
	struct eng_config cfg;
	aw_config(&cfg, true);
	struct eng_auth_worker *w = NULL;
	char err[512];
	cr_assert_eq(eng_auth_worker_create(&cfg, &w, err, sizeof(err)), 0, "%s", err);
	cr_assert_not_null(w);
	cr_assert(eng_auth_worker_offers(w, 0) && !eng_auth_worker_offers(w, 1));
	int fd = eng_auth_worker_attach(w, 0);
	cr_assert_geq(fd, 0);

	static struct eng_auth_job jobs[ENG_AUTH_QUEUE_MAX + 1];
	aw_job(&jobs[0], "slow", "slow pass", false);
	cr_assert_eq(eng_auth_worker_submit(w, &jobs[0]), 0);
	for (uint32_t i = 1; i < ENG_AUTH_QUEUE_MAX; i++) {
		/* right, wrong, right but refused (authzid), unknown user */
		static const char *const pw[] = { "fast pass", "wrong", "fast pass", "fast pass" };
		aw_job(&jobs[i], i % 4 == 3 ? "nobody" : "fast", pw[i % 4], i % 4 == 2);
		cr_assert_eq(eng_auth_worker_submit(w, &jobs[i]), 0, "job %u", i);
	}
	aw_job(&jobs[ENG_AUTH_QUEUE_MAX], "fast", "fast pass", false);
	cr_assert_eq(eng_auth_worker_submit(w, &jobs[ENG_AUTH_QUEUE_MAX]), -EAGAIN,
		     "a full queue refuses (the slow hash holds it)");
	cr_assert_eq(aw_collect(w, fd, ENG_AUTH_QUEUE_MAX), ENG_AUTH_QUEUE_MAX);
	cr_assert(jobs[0].ok, "the slow user's right password");
	for (uint32_t i = 1; i < ENG_AUTH_QUEUE_MAX; i++)
		cr_assert_eq(jobs[i].ok, i % 4 == 0,
			     "job %u verdict", i);

	/* Reload: a new user in, the old ones out; a bad file keeps it. */
	char carol[256];
	aw_hash("carol pass", "$6$aworkercarol", carol, sizeof(carol));
	snprintf(text, sizeof(text), "carol:%s\n", carol);
	aw_write(text);
	cr_assert_eq(eng_auth_worker_reload(w), 0);
	aw_write("carol\n");
	cr_assert_eq(eng_auth_worker_reload(w), 1, "a malformed file is refused");
	aw_job(&jobs[0], "carol", "carol pass", false);
	aw_job(&jobs[1], "fast", "fast pass", false);
	cr_assert_eq(eng_auth_worker_submit(w, &jobs[0]), 0);
	cr_assert_eq(eng_auth_worker_submit(w, &jobs[1]), 0);
	cr_assert_eq(aw_collect(w, fd, 2), 2);
	cr_assert(jobs[0].ok && !jobs[1].ok, "the reloaded table is in force");
	struct eng_auth_worker_stats st;
	eng_auth_worker_stats_get(w, &st);
	cr_assert(st.checked == ENG_AUTH_QUEUE_MAX + 2 && st.refused_full == 1 && st.reloads == 1,
		  "checked %llu refused %llu reloads %llu", (unsigned long long)st.checked,
		  (unsigned long long)st.refused_full, (unsigned long long)st.reloads);
	eng_auth_worker_destroy(w);
	eng_config_free(&cfg);
}
