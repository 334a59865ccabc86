/*
 * eng_auth_worker.c - the node's AUTH checking thread (see eng_auth_worker.h).
 *
 * One mutex guards the queue, the done lists, the pending tables and the
 * counters; the worker holds it only to move jobs, never during a hash.
 * Invariants: queue_count <= ENG_AUTH_QUEUE_MAX; a job is in exactly one
 * of: the submitter's hands, the queue, the worker's hands, a done list;
 * tables[] is read and freed by the worker thread only (and by destroy
 * after the join); pending[] moves to tables[] under the lock.
 */
#include "eng_auth_worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "eng_common.h"

struct eng_auth_port {
	int fd; /* eventfd, -1 until attach */
	struct eng_auth_job *done;
};

struct eng_auth_worker {
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	uint32_t listener_count;
	char names[ENG_CONFIG_LISTENERS_MAX][ENG_CONFIG_NAME_SIZE];
	char paths[ENG_CONFIG_LISTENERS_MAX][ENG_CONFIG_PATH_SIZE];
	struct eng_auth *tables[ENG_CONFIG_LISTENERS_MAX];  /* worker thread only */
	struct eng_auth *pending[ENG_CONFIG_LISTENERS_MAX]; /* reloaded, not installed */
	struct eng_auth_job *queue_head;
	struct eng_auth_job *queue_tail;
	uint32_t queue_count;
	struct eng_auth_port ports[ENG_CONFIG_SHARDS_MAX];
	struct eng_auth_worker_stats stats;
};

/* Under the lock: adopt reloaded tables (the old ones are the worker's to free). */
static void
eng_auth_worker_install(struct eng_auth_worker *w)
{
	for (uint32_t i = 0; i < w->listener_count; i++) {
		if (w->pending[i] == NULL)
			continue;
		eng_auth_free(w->tables[i]);
		w->tables[i] = w->pending[i];
		w->pending[i] = NULL;
	}
}

static void
eng_auth_worker_check(struct eng_auth_worker *w, struct eng_auth_job *job)
{
	ENG_ASSERT(job->listener_index < w->listener_count);
	ENG_ASSERT(job->user_len <= sizeof(job->user));
	ENG_ASSERT(job->password_len <= sizeof(job->password));
	struct eng_auth *table = w->tables[job->listener_index];
	bool ok = false;
	if (table != NULL)
		ok = eng_auth_check(table, job->user, job->user_len, job->password,
				    job->password_len);
	job->ok = ok && !job->refuse;
	explicit_bzero(job->password, sizeof(job->password));
	job->password_len = 0;
}

static void *
eng_auth_worker_main(void *arg)
{
	struct eng_auth_worker *w = arg;
	pthread_mutex_lock(&w->lock);
	for (uint64_t turns = 0;; turns++) {
		ENG_ASSERT(turns < UINT64_MAX); /* unbounded by design: runs until destroy */
		eng_auth_worker_install(w);
		if (w->queue_head == NULL) {
			if (w->stopping)
				break;
			pthread_cond_wait(&w->cond, &w->lock);
			continue;
		}
		struct eng_auth_job *job = w->queue_head;
		w->queue_head = job->next;
		if (w->queue_head == NULL)
			w->queue_tail = NULL;
		pthread_mutex_unlock(&w->lock);
		eng_auth_worker_check(w, job);
		pthread_mutex_lock(&w->lock);
		/* Counted until the job is on its done list: submit bounds both. */
		ENG_ASSERT(w->queue_count > 0);
		w->queue_count--;
		w->stats.checked++;
		struct eng_auth_port *port = &w->ports[job->shard_index];
		ENG_ASSERT(port->fd >= 0);
		job->next = port->done;
		port->done = job;
		uint64_t one = 1;
		/* Under the lock: once the shard takes the job, we are done with
		 * the port. An eventfd write only fails on counter overflow. */
		ssize_t n = write(port->fd, &one, sizeof(one));
		ENG_ASSERT(n == (ssize_t)sizeof(one));
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Load listener i's file into *out; on failure one line in err. */
static int
eng_auth_worker_load(const struct eng_auth_worker *w, uint32_t i, struct eng_auth **out,
		     char *err, size_t err_size)
{
	char why[ENG_CONFIG_ERROR_SIZE];
	int ret = eng_auth_load(w->paths[i], out, why, sizeof(why));
	if (ret < 0)
		snprintf(err, err_size, "listener %s: %s", w->names[i], why);
	return ret;
}

static int
eng_auth_worker_load_all(struct eng_auth_worker *w, const struct eng_config *config, char *err,
			 size_t err_size)
{
	bool any = false;
	w->listener_count = config->listener_count;
	for (uint32_t i = 0; i < config->listener_count; i++) {
		const struct eng_listener *lc = &config->listeners[i];
		snprintf(w->names[i], sizeof(w->names[i]), "%s", lc->name);
		snprintf(w->paths[i], sizeof(w->paths[i]), "%s", lc->auth_file);
		if (lc->auth_file[0] == '\0')
			continue;
		int ret = eng_auth_worker_load(w, i, &w->tables[i], err, err_size);
		if (ret < 0)
			return ret;
		any = true;
	}
	return any ? 1 : 0;
}

int
eng_auth_worker_create(const struct eng_config *config, struct eng_auth_worker **out, char *err,
		       size_t err_size)
{
	ENG_ASSERT(config != NULL && out != NULL);
	ENG_ASSERT(config->listener_count <= ENG_CONFIG_LISTENERS_MAX);
	*out = NULL;
	struct eng_auth_worker *w = calloc(1, sizeof(*w));
	if (w == NULL) {
		snprintf(err, err_size, "auth: out of memory");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < ENG_CONFIG_SHARDS_MAX; i++)
		w->ports[i].fd = -1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	int ret = eng_auth_worker_load_all(w, config, err, err_size);
	if (ret <= 0) {
		eng_auth_worker_destroy(w);
		return ret;
	}
	ret = pthread_create(&w->thread, NULL, eng_auth_worker_main, w);
	if (ret != 0) {
		snprintf(err, err_size, "auth: cannot start the worker thread: %s", strerror(ret));
		eng_auth_worker_destroy(w);
		return -ret;
	}
	w->thread_started = true;
	*out = w;
	return 0;
}

void
eng_auth_worker_destroy(struct eng_auth_worker *w)
{
	if (w == NULL)
		return;
	if (w->thread_started) {
		pthread_mutex_lock(&w->lock);
		w->stopping = true;
		pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->lock);
		pthread_join(w->thread, NULL);
	}
	for (uint32_t i = 0; i < ENG_CONFIG_LISTENERS_MAX; i++) {
		eng_auth_free(w->tables[i]);
		eng_auth_free(w->pending[i]);
	}
	for (uint32_t i = 0; i < ENG_CONFIG_SHARDS_MAX; i++) {
		if (w->ports[i].fd >= 0)
			close(w->ports[i].fd);
	}
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

bool
eng_auth_worker_offers(const struct eng_auth_worker *w, uint32_t listener_index)
{
	if (w == NULL || listener_index >= w->listener_count)
		return false;
	return w->paths[listener_index][0] != '\0';
}

uint32_t
eng_auth_worker_reload(struct eng_auth_worker *w)
{
	if (w == NULL)
		return 0;
	uint32_t failed = 0;
	for (uint32_t i = 0; i < w->listener_count; i++) {
		if (w->paths[i][0] == '\0')
			continue;
		struct eng_auth *table = NULL;
		char err[ENG_CONFIG_ERROR_SIZE + ENG_CONFIG_NAME_SIZE + 16];
		if (eng_auth_worker_load(w, i, &table, err, sizeof(err)) < 0) {
			fprintf(stderr, "ringmail: SIGHUP: %s; the previous auth_file stays\n", err);
			failed++;
			continue;
		}
		pthread_mutex_lock(&w->lock);
		eng_auth_free(w->pending[i]); /* an earlier reload not installed yet */
		w->pending[i] = table;
		w->stats.reloads++;
		pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->lock);
	}
	return failed;
}

int
eng_auth_worker_attach(struct eng_auth_worker *w, uint32_t shard_index)
{
	ENG_ASSERT(w != NULL && shard_index < ENG_CONFIG_SHARDS_MAX);
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&w->lock);
	ENG_ASSERT(w->ports[shard_index].fd < 0); /* once per shard */
	w->ports[shard_index].fd = fd;
	pthread_mutex_unlock(&w->lock);
	return fd;
}

int
eng_auth_worker_submit(struct eng_auth_worker *w, struct eng_auth_job *job)
{
	ENG_ASSERT(w != NULL && job != NULL);
	ENG_ASSERT(job->shard_index < ENG_CONFIG_SHARDS_MAX);
	ENG_ASSERT(job->listener_index < w->listener_count);
	int ret = 0;
	pthread_mutex_lock(&w->lock);
	ENG_ASSERT(w->ports[job->shard_index].fd >= 0 && !w->stopping);
	if (w->queue_count >= ENG_AUTH_QUEUE_MAX) {
		w->stats.refused_full++;
		ret = -EAGAIN;
	} else {
		job->ok = false;
		job->next = NULL;
		if (w->queue_tail != NULL)
			w->queue_tail->next = job;
		else
			w->queue_head = job;
		w->queue_tail = job;
		w->queue_count++;
		pthread_cond_signal(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	return ret;
}

struct eng_auth_job *
eng_auth_worker_take(struct eng_auth_worker *w, uint32_t shard_index)
{
	ENG_ASSERT(w != NULL && shard_index < ENG_CONFIG_SHARDS_MAX);
	struct eng_auth_port *port = &w->ports[shard_index];
	ENG_ASSERT(port->fd >= 0);
	/* Reset first: a job finished after this read bumps it again, so the
	 * next poll sees it; one finished before is in the list below. */
	uint64_t count = 0;
	(void)read(port->fd, &count, sizeof(count)); /* EAGAIN: nothing new */
	pthread_mutex_lock(&w->lock);
	struct eng_auth_job *list = port->done;
	port->done = NULL;
	pthread_mutex_unlock(&w->lock);
	return list;
}

void
eng_auth_worker_stats_get(struct eng_auth_worker *w, struct eng_auth_worker_stats *out)
{
	ENG_ASSERT(w != NULL && out != NULL);
	pthread_mutex_lock(&w->lock);
	*out = w->stats;
	pthread_mutex_unlock(&w->lock);
}
